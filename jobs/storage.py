"""Storage faults: the lab home or the database file cannot be written (disk full, a read-only
file system, no permission). They are the machine's problem, not the run's: a run that meets one
goes back to the queue and is retried with back-off (jobs.outcome), and a client call that meets
one gets a refusal saying what is wrong (jobs.db.StoreUnavailable), never a traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from gce_core.messages import clip

# errno values that say "this storage cannot take a write now", whoever asked
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})
# what SQLite says when its file (or its folder) cannot be written or opened
SQLITE_STORAGE_MESSAGES = ("disk is full", "disk i/o error", "unable to open database file",
                           "readonly database", "file is not a database", "database disk image is malformed")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_storage_fault(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a storage fault: an OSError with one of
    STORAGE_ERRNOS, or the database being unusable (jobs.db.StoreUnavailable)."""
    from jobs.db import StoreUnavailable

    for e in _chain(exc):
        if isinstance(e, StoreUnavailable):
            return True
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return True
    return False


def storage_fault_text(exc: BaseException) -> str:
    """One line about a storage fault: the OSError's message and file, or the StoreUnavailable's."""
    from jobs.db import StoreUnavailable

    for e in _chain(exc):
        if isinstance(e, StoreUnavailable):
            return str(e)
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            where = f" ({clip(str(e.filename), 200)})" if e.filename else ""
            return f"{e.strerror or e}{where} [errno {e.errno} {errno.errorcode.get(e.errno, '')}]"
    return clip(str(exc), 300)


def diagnose(path: str | os.PathLike) -> str | None:
    """What keeps this process from writing under ``path`` (the nearest folder that exists), in a
    few words, or None when nothing visible does: a read-only file system, a full disk, no
    permission."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return f"{p} is on a read-only file system"
    free = st.f_bavail * st.f_frsize
    if free < 1 << 20:
        return f"the disk of {p} is full ({free // 1024} KiB free)"
    if not os.access(p, os.W_OK):
        return f"{p} is not writable by this user (uid {os.getuid()})"
    return None
