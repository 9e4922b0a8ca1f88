"""mkdocs hook: links from a page to repository files outside docs/ (such as ../experiments/README.md).

mkdocs checks links between pages; a link that leaves the docs directory it cannot check or serve. This
hook checks that the file or directory exists in the repository (a missing one is a warning, so
``mkdocs build --strict`` fails) and shows it as its repository path: a link to the file in the
repository's browser when ``repo_url`` is set in mkdocs.yml, else the path as code.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath

log = logging.getLogger("mkdocs.hooks.repository_links")
LINK = re.compile(r"\[(?P<label>[^\]]+)\]\((?P<target>[^)\s]+)\)")


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs = Path(config["docs_dir"]).resolve()
    repository = Path(config["config_file_path"]).resolve().parent
    page_dir = (docs / page.file.src_uri).parent
    repo_url = (config.get("repo_url") or "").rstrip("/")
    in_code = False
    lines = []
    for line in markdown.split("\n"):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if not in_code:
            line = LINK.sub(lambda match: _rewrite(match, page_dir, docs, repository, repo_url, page), line)
        lines.append(line)
    return "\n".join(lines)


def _rewrite(match: re.Match, page_dir: Path, docs: Path, repository: Path, repo_url: str, page) -> str:
    label, target = match.group("label"), match.group("target")
    if re.match(r"^[a-z]+:", target) or target.startswith(("#", "/")):
        return match.group(0)
    path, _, anchor = target.partition("#")
    resolved = (page_dir / path).resolve()
    if resolved == docs or docs in resolved.parents:
        return match.group(0)  # a page: mkdocs checks it
    if repository not in resolved.parents:
        log.warning("%s links to '%s', outside the repository", page.file.src_uri, target)
        return match.group(0)
    relative = PurePosixPath(resolved.relative_to(repository).as_posix())
    if not resolved.exists():
        log.warning("%s links to '%s', but the repository has no %s", page.file.src_uri, target, relative)
        return label
    if repo_url:
        return f"[{label}]({repo_url}/blob/main/{relative}{'#' + anchor if anchor else ''})"
    shown = label.strip("`")
    return f"`{relative}`" if shown == str(relative) else f"{label} (`{relative}`)"
