"""A run's log: <lab home>/runs/<id>/log.txt holds the stdout and stderr of the process while it
trains the run, every attempt appended, with a line from the supervisor at each start and end. A
long-lived process (a warm run process, a Ray worker) points its output at each run's log in turn
(``output_to``)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024


def read_tail(path: str | Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_BYTES))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def append_note(path: str | Path, message: str) -> None:
    """Append a supervisor line: '=== 2025-01-01 12:00:00 message ==='."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {message} ===\n")
    except OSError:
        pass  # a log line is never worth failing a run over


def with_tail(reason: str, tail: str) -> str:
    """A failure reason followed by the tail of the log, as stored in a run's ``error``."""
    return f"{reason}\n--- last lines of its log ---\n{tail}" if tail.strip() else reason


@contextlib.contextmanager
def output_to(path: str | Path) -> Iterator[None]:
    """Send this process's file descriptors 1 and 2 (so print, tracebacks and what C code writes)
    to the end of ``path`` while the block runs, then back to where they were."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a full disk: what is lost is lost
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
