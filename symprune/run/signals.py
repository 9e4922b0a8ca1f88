"""SIGTERM and SIGINT as an exception, so that a killed run unwinds: it logs why it stopped, marks its
W&B run as interrupted and writes no run record."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

HANDLED = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """Raised in the main thread when the process receives SIGTERM or SIGINT (not an ``Exception``, so
    no library's ``except Exception`` swallows it)."""

    def __init__(self, signal_number: int):
        self.signal_number = signal_number
        self.signal_name = signal.Signals(signal_number).name
        super().__init__(f"interrupted by {self.signal_name}")


@contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """While the with-body runs, SIGTERM and SIGINT raise ``Interrupted``; the previous handlers return after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signal_number, frame):
        raise Interrupted(signal_number)

    previous = {handled: signal.signal(handled, interrupt) for handled in HANDLED}
    try:
        yield
    finally:
        for handled, handler in previous.items():
            signal.signal(handled, handler)
