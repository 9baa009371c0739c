"""Per-epoch checkpoints: written atomically, carrying the spec they belong to.

A checkpoint holds everything needed to continue a run bit-for-bit: model, optimiser, scheduler,
the data RNG, the ACS weights of the truncated loss, the best-validation model and the history.

The folder keeps the last two: ``checkpoint.pt`` and the one before it, ``checkpoint.prev.pt``.
A write goes to ``checkpoint.tmp`` first (fsynced, then renamed); a write that fails (disk full,
read-only folder) removes its temp file and raises the OSError, leaving the checkpoints as they
were. A checkpoint that cannot be read back (truncated, random bytes, empty, not a checkpoint) is
moved aside to ``checkpoint.bad-<time>.pt`` for inspection, saying so on the ``gce_core.checkpoint``
logger (stderr, so the run's log), and the previous one is used, else none (epoch 0): training is
deterministic, so a resume from an earlier epoch repeats the later ones with the same numbers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from gce_core.spec import SpecError, load_stored_spec

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"
TEMP_NAME = "checkpoint.tmp"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("spec", "epoch", "model", "optimizer", "scheduler", "generator", "best_val", "history")
log = logging.getLogger(__name__)


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be used: unreadable, not a checkpoint, or another run's."""


def checkpoint_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to directory/checkpoint.pt atomically (temp file, fsync, rename), keeping
    the one it replaces as checkpoint.prev.pt. On failure the temp file is removed and the
    OSError raised; the checkpoints already there are untouched."""
    path = checkpoint_path(directory)
    tmp = path.with_name(TEMP_NAME)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save({"format_version": FORMAT_VERSION, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, path.with_name(PREVIOUS_NAME))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The state in checkpoint file ``path``; CorruptCheckpoint saying why it cannot be used."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CorruptCheckpoint("the file is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or random bytes: pickle, zip and torch each say it their way
        raise CorruptCheckpoint(f"it cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"it holds a {type(state).__name__}, not a checkpoint")
    if state.get("format_version") != FORMAT_VERSION:
        raise CorruptCheckpoint(f"checkpoint format {str(state.get('format_version'))[:40]} is not {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CorruptCheckpoint(f"it lacks {', '.join(missing)}")
    return state


def _same_spec(saved: Any, spec_json: str) -> bool:
    # the same text, or the same spec written by an older lab (fields added since are None)
    if saved == spec_json:
        return True
    try:
        return isinstance(saved, str) and load_stored_spec(saved) == load_stored_spec(spec_json)
    except (SpecError, TypeError, ValueError):
        return False


def set_aside(path: Path) -> Path:
    """Move a bad checkpoint file out of the way (kept for inspection); its new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"checkpoint.bad-{stamp}.pt")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"checkpoint.bad-{stamp}-{n}.pt")
    os.replace(path, target)
    return target


def load_checkpoint(directory: str | os.PathLike, spec_json: str, *,
                    foreign: Literal["refuse", "set_aside"] = "refuse",
                    say: Callable[[str], None] | None = None) -> dict[str, Any] | None:
    """The newest usable checkpoint in ``directory`` (checkpoint.pt, else checkpoint.prev.pt),
    or None if there is none.

    A file that cannot be read is moved aside (``set_aside``) and the next one tried; each time
    ``say`` (default: a warning on this module's logger) gets one line saying so. A checkpoint of
    another spec raises ValueError with ``foreign="refuse"`` (resuming a different experiment
    silently would mix two runs: a folder given by hand); with ``foreign="set_aside"`` (a folder
    that belongs to one run, as the job runner's do) it is moved aside like a corrupted one.
    """
    say = say or log.warning
    folder = Path(directory)
    with contextlib.suppress(OSError):  # a write cut short (kill -9, full disk) is never a checkpoint
        (folder / TEMP_NAME).unlink()
    for name in (CHECKPOINT_NAME, PREVIOUS_NAME):
        path = folder / name
        if not path.exists():
            continue
        try:
            state = read_checkpoint(path)
            if not _same_spec(state["spec"], spec_json):
                if foreign == "refuse":
                    raise ValueError(f"{path} belongs to another run spec; use an empty folder for a new run")
                raise CorruptCheckpoint("it belongs to another run spec")
        except CorruptCheckpoint as exc:
            aside = set_aside(path)
            fallback = ("trying the previous checkpoint" if name == CHECKPOINT_NAME
                        and (folder / PREVIOUS_NAME).exists() else "starting again from epoch 0")
            say(f"checkpoint {path} is unusable: {exc}; moved it aside to {aside.name}; {fallback}")
            continue
        return state
    return None


def peek_epoch(directory: str | os.PathLike, spec_json: str) -> int:
    """Epochs completed by the checkpoint in ``directory`` (0 if there is none)."""
    state = load_checkpoint(directory, spec_json)
    return 0 if state is None else int(state["epoch"])
