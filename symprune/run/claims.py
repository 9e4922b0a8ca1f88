"""Claims: while a job of a sweep runs a config, it holds ``<sweep>/.claims/<config hash>``, so two jobs of one
sweep never run the same config at once.

A claim file holds ``host pid token`` and its modification time is the holder's heartbeat: a daemon thread
touches it every ``HEARTBEAT_INTERVAL`` seconds while the job runs and stops when the claim is released.
Another job takes the claim over when its heartbeat is older than ``CLAIM_EXPIRY`` seconds, whichever host it
came from (a job that died on another SLURM node cannot block its config for longer than that), and at once
when it was left by a dead process of this host. The heartbeat is the file's mtime, compared with the reader's
clock: the nodes' clocks need to agree only to well within the expiry (a touch on NFS takes the server's time).
A claim of an older symprune (``host pid``, never refreshed) expires the same way.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

log = logging.getLogger("symprune")
CLAIMS_DIR = ".claims"
HEARTBEAT_INTERVAL = 30.0  # seconds between two touches of a held claim
CLAIM_EXPIRY = 600.0  # seconds without a heartbeat after which a claim is taken over, from any host


def _holder_alive(claim: Path) -> bool:
    """Whether the claim's holder may still be running: its heartbeat is recent and, on this host, its
    process exists. A claim being written, or garbage, counts as stale once its heartbeat has expired."""
    try:
        heartbeat = claim.stat().st_mtime
        holder = claim.read_text().split()
    except FileNotFoundError:
        return False
    if time.time() - heartbeat > CLAIM_EXPIRY:
        return False
    if len(holder) < 2 or holder[0] != socket.gethostname():
        return True  # another machine's job (e.g. SLURM), or a claim still being written: its heartbeat decides
    try:
        os.kill(int(holder[1]), 0)
    except ValueError:
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owned(path: Path, content: str) -> bool:
    try:
        return path.read_text() == content
    except OSError:
        return False


def _beat(path: Path, content: str, interval: float, stop: threading.Event) -> None:
    """Touch the claim every ``interval`` seconds until ``stop``; a claim that another job took over (this job
    stalled past the expiry) is left to it."""
    while not stop.wait(interval):
        if not _owned(path, content):
            log.warning("the claim %s was taken over by another job: this config may be run twice", path)
            return
        try:
            os.utime(path)
        except OSError as error:
            log.warning("cannot refresh the claim %s (%s): another job may take it over after %.0f s",
                        path, error, CLAIM_EXPIRY)


@contextmanager
def claim(sweep_dir: str | Path, digest: str) -> Iterator[bool]:
    """Yields True while this process exclusively holds the config, keeping the claim's heartbeat fresh;
    False if a live job holds it. A claim whose holder is dead or whose heartbeat expired is taken over."""
    claims = Path(sweep_dir) / CLAIMS_DIR
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / digest
    for _ in range(2):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                judged = path.stat()
            except FileNotFoundError:
                continue
            if _holder_alive(path):
                yield False
                return
            _remove_if_unchanged(path, judged)
            continue
        content = f"{socket.gethostname()} {os.getpid()} {secrets.token_hex(8)}"
        with os.fdopen(handle, "w") as stream:
            stream.write(content)
        stop = threading.Event()
        heartbeat = threading.Thread(target=_beat, args=(path, content, HEARTBEAT_INTERVAL, stop), daemon=True,
                                     name=f"symprune-claim-{digest}")
        heartbeat.start()
        try:
            yield True
        finally:
            stop.set()
            heartbeat.join()
            if _owned(path, content):
                path.unlink(missing_ok=True)
        return
    yield False


def _remove_if_unchanged(path: Path, judged: os.stat_result) -> None:
    """Remove a stale claim unless it changed since it was judged (another job took it over meanwhile)."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return
    if (now.st_ino, now.st_mtime_ns) == (judged.st_ino, judged.st_mtime_ns):
        path.unlink(missing_ok=True)
