"""Which runs one process can train together: the rule as data.

- Fused: ``gce_core.fused.train_fused`` trains them as one stacked model. ``gce_core.fused.can_fuse``
  is the full check on the built model; ``fusion_key`` is its cheap twin on the spec alone: two
  specs with equal, non-None keys are fusable (tests/test_fusable.py holds the two to the same
  answers).
- In turn: runs with ``compile`` that one process trains one after another. torch.compile keeps
  its graphs for the life of a process and a later run of the same architecture and shapes passes
  their guards, so the runs pay the compile time once, not once each (``in_turn_key``).

Torch-free on purpose, so that a caller that only sorts runs (the job runner's claim) can group
them without loading the trainer. ``process_key`` is the one key such a caller needs.
"""

from __future__ import annotations

from typing import Any, Protocol

# Spec fields in which fused runs may differ; every other field must be equal.
FUSABLE_DIFFERENCES = (
    "name", "loss", "q", "k", "prune_start", "prune_every",
    "seed", "noise", "noise_rate", "class_map", "open_set_source",
)  # fmt: skip
# Models that are a Flatten / Linear / ReLU chain. The BatchNorm models (cnn, resnet18, resnet34)
# keep running statistics per run, which the fused trainer does not stack.
FUSABLE_MODELS = ("mlp",)


class _Spec(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _shared_fields(fields: dict[str, Any]) -> tuple:
    """Every field but FUSABLE_DIFFERENCES, as a hashable key."""
    return tuple(
        sorted(
            (name, _hashable(value))
            for name, value in fields.items()
            if name not in FUSABLE_DIFFERENCES
        )
    )


def fusion_key(spec: _Spec) -> tuple | None:
    """None if ``spec`` (a gce_core.spec.RunSpec) cannot be fused (its model is not one of
    FUSABLE_MODELS, or compile is true); else a hashable key of every field that fused runs must
    share (all but FUSABLE_DIFFERENCES). Runs with equal keys can be trained as one job."""
    fields = spec.to_dict()
    if fields["model"] not in FUSABLE_MODELS or fields["compile"]:
        return None
    return _shared_fields(fields)


def in_turn_key(spec: _Spec) -> tuple | None:
    """None unless ``spec`` has compile true; else a hashable key of every field that runs trained
    in turn by one process share (all but FUSABLE_DIFFERENCES: the model, the data and their
    shapes, so the first run's compiled graphs serve them all)."""
    fields = spec.to_dict()
    if not fields["compile"]:
        return None
    return _shared_fields(fields)


def process_key(spec: _Spec) -> tuple | None:
    """Runs of one group with equal, non-None keys can share one process: ("fused", ...) trained
    as one stacked model, ("in turn", ...) trained one after another; None: a process of its own."""
    key = fusion_key(spec)
    if key is not None:
        return ("fused", key)
    key = in_turn_key(spec)
    return None if key is None else ("in turn", key)
