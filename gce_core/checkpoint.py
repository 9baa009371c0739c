"""Per-epoch checkpoints: written atomically, carrying the spec they belong to.

A checkpoint holds everything needed to continue a run bit-for-bit: model, optimiser, scheduler,
the data RNG, the ACS weights of the truncated loss, the best-validation model and the history.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gce_core.spec import load_stored_spec

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def checkpoint_path(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_NAME


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` to directory/checkpoint.pt atomically (temp file, fsync, rename)."""
    path = checkpoint_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        torch.save({"format_version": FORMAT_VERSION, **state}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: str | os.PathLike, spec_json: str) -> dict[str, Any] | None:
    """The checkpoint in ``directory``, or None if there is none.

    Raises ValueError if it belongs to another spec or another format version: resuming a
    different experiment silently would mix two runs.
    """
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state.get('format_version')} is not {FORMAT_VERSION}")
    if state.get("spec") != spec_json and load_stored_spec(state["spec"]) != load_stored_spec(spec_json):
        # (the same text, or the same spec written by an older lab: fields added since are None)
        raise ValueError(f"{path} belongs to another run spec; use an empty folder for a new run")
    return state


def peek_epoch(directory: str | os.PathLike, spec_json: str) -> int:
    """Epochs completed by the checkpoint in ``directory`` (0 if there is none)."""
    state = load_checkpoint(directory, spec_json)
    return 0 if state is None else int(state["epoch"])
