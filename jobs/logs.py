"""A run's log: <lab home>/runs/<id>/log.txt holds its process's stdout and stderr, every attempt
appended, with a line from the supervisor at each start and end. A fused process (several runs in
one process) has its stdout in its first run's log and appends each run's own lines to its log."""

from __future__ import annotations

import time
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


def append_line(path: str | Path, text: str) -> None:
    """Append one line of a training process to a run's log (as its stdout would)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text.rstrip("\n") + "\n")
    except OSError:
        pass  # a log line is never worth failing a run over
