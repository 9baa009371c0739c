"""Which runs can be trained together by ``gce_core.fused.train_fused``: the rule as data.

Torch-free on purpose, so that a caller that only sorts runs (the job runner's claim) can group
them without loading the trainer. ``gce_core.fused.can_fuse`` is the full check on the built
model; ``fusion_key`` is its cheap twin on the spec alone: two specs with equal, non-None keys
are fusable (tests/test_fusable.py holds the two to the same answers).
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


def fusion_key(spec: _Spec) -> tuple | None:
    """None if ``spec`` (a gce_core.spec.RunSpec) cannot be fused (its model is not one of
    FUSABLE_MODELS, or compile is true); else a hashable key of every field that fused runs must
    share (all but FUSABLE_DIFFERENCES). Runs with equal keys can be trained as one job."""
    fields = spec.to_dict()
    if fields["model"] not in FUSABLE_MODELS or fields["compile"]:
        return None
    return tuple(
        sorted(
            (name, _hashable(value))
            for name, value in fields.items()
            if name not in FUSABLE_DIFFERENCES
        )
    )
