"""Files written so that a reader never sees a partial one, with the permissions the user's umask gives,
and the checks that a run can write where it will write."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from symprune.errors import ConfigError


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def follow_umask(path: Path, directory: bool = False) -> None:
    """Give a file or directory made by ``tempfile`` (always private: 0600 / 0700) the mode an ordinary
    ``open`` or ``mkdir`` would have given it, so colleagues sharing a machine can read results."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def write_json_atomic(target: Path, data: Any) -> None:
    """A temporary file in the same directory, then a rename: readers never see a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".json.tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=2, sort_keys=False, default=str)
            stream.flush()
            os.fsync(stream.fileno())
        follow_umask(Path(temporary))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def nearest_existing(path: Path) -> Path:
    """The path itself if it exists, else its closest existing ancestor (where it would be created)."""
    path = path.expanduser().absolute()
    while not path.exists():
        path = path.parent
    return path


def check_writable(directory: Path, what: str) -> None:
    """Refuse a directory that cannot be created or written (read-only file system, no permission) by
    creating and removing a scratch directory where it would go: permission bits alone do not tell
    (root, read-only mounts)."""
    existing = nearest_existing(directory)
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=".symprune-write-check-").cleanup()
    except OSError as error:
        raise ConfigError(f"{what} {directory} cannot be written: {error.strerror} ({existing})") from None


def check_free_space(directory: Path, needed: int, what: str) -> None:
    """Refuse to start a run whose output would not fit on the disk it goes to."""
    existing = nearest_existing(directory)
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise ConfigError(
            f"{what} {directory} needs about {needed / 2**30:.2f} GiB, but {existing} has {free / 2**30:.2f} GiB free"
        )


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, computed once per process for a given size and modification time."""
    path = Path(path).expanduser().resolve()
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(2**24), b""):
            digest.update(chunk)
    return digest.hexdigest()
