"""Processes on this machine: is one alive (and still the one we think), and kill a whole group.

Linux: /proc tells a zombie from a live process and gives the command line, so a recycled pid is
not mistaken for a run's process. Elsewhere, a signal-0 probe is the best available.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

_PROC = Path("/proc")


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, or None if there is no such process."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]  # "pid (comm) S ..."; comm may hold spaces


def _cmdline(pid: int) -> str:
    try:
        return (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid: int | None, marker: str | None = None) -> bool:
    """True if ``pid`` runs and is not a zombie; with ``marker``, its command line must hold it."""
    if not pid or pid <= 0:
        return False
    if _PROC.is_dir():
        state = _proc_state(pid)
        if state is None or state in ("Z", "X", "x"):
            return False
        return marker is None or marker in _cmdline(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to every process of group ``pgid``; False if the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True
