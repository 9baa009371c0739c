"""The Launch page's logic: presets, form choices -> run specs, inline problems, run-time estimate.

Everything here is plain Python (no Streamlit) so tests call it directly. A form's choices expand
to one spec per (loss, seed); each spec is validated by ``gce_core.spec.parse_spec`` and its
problems are reported per field, once, however many specs share them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from gce_core.data import DATASETS
from gce_core.models import flops_hint
from gce_core.noise import expected_transition
from gce_core.spec import RunSpec, SpecError, parse_spec, preset_fields, scale_schedule

# The form offers the paper's four losses: it has widgets for q and k only. The other registry
# losses are selectable through a spec, `python -m gce_core` and `python -m jobs submit`.
FORM_LOSSES = ("cce", "mae", "lq", "truncated_lq")
LOSS_LABELS = {"cce": "CCE", "mae": "MAE", "lq": "Lq (GCE)", "truncated_lq": "truncated Lq"}
NOISE_LABELS = {
    "none": "none (clean labels)",
    "uniform": "uniform (to the other c-1 classes)",
    "uniform_any": "uniform over all c classes (real flip rate eta(c-1)/c)",
    "class_dependent": "class-dependent (pair flips)",
    "open_set": "open-set (foreign images, labels kept)",
}
DATASET_LABELS = {
    "digits": "digits (8x8, embedded)",
    "fashion_mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
}

# Sizes of the training and test splits before any subset / validation hold-out.
TRAIN_SIZES = {"digits": 1437, "fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000}
TEST_SIZES = {"digits": 360, "fashion_mnist": 10000, "cifar10": 10000, "cifar100": 10000}

# Rough throughput of one run (one worker slot): sustained FLOP/s, overhead per batch, start-up
# (process, imports, data). Calibrated on the quick digits demo on a 2-core CPU (~0.1 s/epoch).
DEVICE_SPEED = {
    "cpu": {"flops": 1.5e10, "per_batch": 4e-3, "startup": 6.0},
    "cuda": {"flops": 4e13, "per_batch": 1.5e-3, "startup": 15.0},
}


@dataclass(frozen=True)
class LaunchChoices:
    """What the Launch form holds. ``losses`` x seeds ``first_seed .. first_seed + seeds - 1``
    become one run each; the other fields go into every spec unchanged."""

    dataset: str = "digits"
    model: str = "mlp"
    noise: str = "uniform"
    noise_rate: float = 0.4
    class_map: str | None = None
    losses: tuple[str, ...] = ("cce", "mae", "lq")
    q: float = 0.7
    k: float = 0.5
    epochs: int = 60
    seeds: int = 1
    first_seed: int = 0
    name: str = ""
    # advanced (hidden in teaching mode)
    lr: float = 0.1
    batch_size: int = 128
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    train_subset: int | None = None
    val_fraction: float = 0.1
    augment: bool = False
    compile: bool = False
    prune_start: int = 40
    prune_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)  # other spec fields a preset sets

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    preset: str  # gce_core preset name: "quick" or "paper"
    dataset: str
    overrides: dict[str, Any]
    help: str


PRESETS: dict[str, Preset] = {
    p.key: p
    for p in (
        Preset(
            "quick", "Quick demo: digits, 40% uniform, CCE vs MAE vs Lq", "quick", "digits",
            dict(noise="uniform", noise_rate=0.4, losses=("cce", "mae", "lq"), q=0.7, epochs=40),
            "Three small runs on the embedded 8x8 digits; seconds on a CPU.",
        ),
        Preset(
            "paper_cifar10", "Paper: CIFAR-10 protocol", "paper", "cifar10",
            dict(noise="uniform", noise_rate=0.4, losses=("cce", "lq", "truncated_lq"), q=0.7, seeds=5),
            "ResNet-34, SGD lr 0.01, 120 epochs (lr /10 at 40 and 80), 5 seeds. Needs a GPU and the CIFAR-10 files.",
        ),
        Preset(
            "paper_cifar100", "Paper: CIFAR-100 protocol", "paper", "cifar100",
            dict(noise="uniform", noise_rate=0.4, losses=("cce", "lq", "truncated_lq"), q=0.7, seeds=5),
            "ResNet-34, 150 epochs (lr /10 at 80 and 120), pruning from epoch 80, 5 seeds. Needs a GPU.",
        ),
        Preset(
            "paper_fashion_mnist", "Paper: Fashion-MNIST protocol", "paper", "fashion_mnist",
            dict(noise="uniform", noise_rate=0.4, losses=("cce", "lq", "truncated_lq"), q=0.7, seeds=5),
            "ResNet-18 (recalled, unverified), 120 epochs (lr /10 at 40 and 80), 5 seeds.",
        ),
    )
}
DEFAULT_PRESET = "quick"

_CHOICE_FIELDS = {f for f in LaunchChoices.__dataclass_fields__ if f not in ("extra", "losses", "seeds", "first_seed")}


def choices_from_preset(key: str) -> LaunchChoices:
    """The form's values for preset ``key`` (one of PRESETS), built on gce_core's preset."""
    if key not in PRESETS:
        raise ValueError(f"unknown preset {key!r}; allowed: {', '.join(PRESETS)}")
    p = PRESETS[key]
    fields = preset_fields(p.preset, p.dataset)  # validated below, through the specs
    if "epochs" in p.overrides:  # the preset's schedule at the same fractions of the run
        fields = scale_schedule(fields, p.overrides["epochs"])
    base = {k: v for k, v in fields.items() if k in _CHOICE_FIELDS}
    extra = {k: v for k, v in fields.items() if k not in _CHOICE_FIELDS and k != "dataset"}
    defaults = RunSpec().to_dict()
    values = {k: base.get(k, defaults.get(k)) for k in _CHOICE_FIELDS if k in defaults}
    values["lr_milestones"] = tuple(values.get("lr_milestones") or ())
    values.update(dataset=p.dataset, extra=extra)
    values.update(p.overrides)
    return LaunchChoices(**values)


def spec_fields(choices: LaunchChoices, loss: str, seed: int) -> dict[str, Any]:
    """The spec dict of one run of the form: one loss, one seed."""
    data = {k: v for k, v in choices.to_dict().items() if k in _CHOICE_FIELDS}
    data.update(choices.extra)
    data.update(loss=loss, seed=seed, lr_milestones=list(choices.lr_milestones))
    if data["noise"] != "class_dependent":
        data["class_map"] = None
    return data


def build_specs(choices: LaunchChoices) -> tuple[list[RunSpec], list[tuple[str, str]]]:
    """Expand the form into specs (losses x seeds). Returns (specs, problems); when problems is
    not empty the specs are incomplete and nothing should be submitted. Each problem is
    (field, message) as ``SpecError`` gives it, deduplicated across runs."""
    problems: list[tuple[str, str]] = []
    if not choices.losses:
        problems.append(("losses", f"pick at least one loss ({', '.join(FORM_LOSSES)})"))
    if choices.seeds < 1:
        problems.append(("seeds", f"seeds must be at least 1, got {choices.seeds}"))
    specs: list[RunSpec] = []
    for loss in choices.losses:
        for i in range(max(choices.seeds, 0)):
            try:
                specs.append(parse_spec(spec_fields(choices, loss, choices.first_seed + i)))
            except SpecError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
    return specs, problems


def advice(choices: LaunchChoices) -> list[str]:
    """Warnings that do not block a launch (the runs would run, perhaps not as intended)."""
    notes = []
    info = DATASETS.get(choices.dataset)
    if "truncated_lq" in choices.losses and choices.prune_start > choices.epochs:
        notes.append(
            f"truncated Lq prunes from epoch {choices.prune_start}, but the runs have "
            f"{choices.epochs} epochs: it will train as plain Lq. Lower 'prune start' (advanced)."
        )
    if info is not None and not info.embedded:
        notes.append(f"{choices.dataset} is read from the data folder. {info.how_to_get}")
    if "mae" in choices.losses and info is not None and info.num_classes >= 100:
        notes.append("MAE barely trains on 100 classes (the paper's point); expect low accuracy.")
    return notes


# --- noise preview ---------------------------------------------------------------------------
def noise_matrix(choices: LaunchChoices) -> torch.Tensor:
    """The (C, C) transition matrix the chosen noise produces in expectation (rows: clean label,
    columns: noisy label). Raises ValueError when the noise is not valid for the data set."""
    info = DATASETS[choices.dataset]
    class_map = choices.class_map if choices.noise == "class_dependent" else None
    return expected_transition(
        choices.noise, choices.noise_rate, info.num_classes, class_map, dataset=choices.dataset
    )


def wrong_label_share(matrix: torch.Tensor) -> float:
    """Expected share of wrong training labels for balanced classes: 1 - mean(diag)."""
    return float(1.0 - matrix.diagonal().mean())


# --- run-time estimate -----------------------------------------------------------------------
def device_kind(devices: list[str] | tuple[str, ...]) -> str:
    """"cuda" when the executor lists a CUDA device, else "cpu"."""
    return "cuda" if any(str(d).startswith("cuda") for d in devices) else "cpu"


def epoch_seconds(spec: RunSpec, kind: str = "cpu") -> float:
    """Rough seconds of one epoch on one slot: training (3x forward FLOPs) plus evaluation of
    validation and test, plus a fixed cost per batch."""
    speed = DEVICE_SPEED[kind]
    info = DATASETS[spec.dataset]
    n = TRAIN_SIZES[spec.dataset]
    if spec.train_subset:
        n = min(n, spec.train_subset)
    n_val = round(spec.val_fraction * n)
    n_train = n - n_val
    per_image = flops_hint(spec.model, info.image_shape, info.num_classes)
    flops = per_image * (3 * n_train + n_val + TEST_SIZES[spec.dataset])
    batches = math.ceil(n_train / spec.batch_size)
    return flops / speed["flops"] + batches * speed["per_batch"]


def run_seconds(spec: RunSpec, kind: str = "cpu") -> float:
    """Rough seconds of a whole run on one slot, start-up included."""
    return DEVICE_SPEED[kind]["startup"] + spec.epochs * epoch_seconds(spec, kind)


def total_seconds(specs: list[RunSpec], slots: int, kind: str = "cpu") -> float:
    """Wall time until all ``specs`` finish on ``slots`` parallel slots (longest first, each to
    the least busy slot). 0 for no specs."""
    loads = [0.0] * max(1, slots)
    for seconds in sorted((run_seconds(s, kind) for s in specs), reverse=True):
        i = loads.index(min(loads))
        loads[i] += seconds
    return max(loads)


def format_duration(seconds: float) -> str:
    """'12 s', '3 min', '2.5 h', '260 days': whole numbers, one decimal below 10."""

    def num(value: float) -> str:
        return f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")

    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{num(seconds / 3600)} h"
    return f"{num(seconds / 86400)} days"


def session_cap_problem(active: int, new: int, cap: int) -> str | None:
    """A message when ``new`` more runs would take this session past ``cap`` queued or running
    runs, else None."""
    if active + new <= cap:
        return None
    left = max(0, cap - active)
    return (
        f"this session already has {active} run(s) queued or running; the cap is {cap} per "
        f"session, so at most {left} more can be launched now. Wait for some to finish, or "
        "cancel some on the Runs page."
    )


def with_values(choices: LaunchChoices, **values: Any) -> LaunchChoices:
    """A copy with some fields replaced (tuples for the tuple fields)."""
    if "losses" in values:
        values["losses"] = tuple(values["losses"])
    if "lr_milestones" in values:
        values["lr_milestones"] = tuple(values["lr_milestones"])
    return replace(choices, **values)


def parse_milestones(text: str) -> tuple[tuple[int, ...], str | None]:
    """'40, 80' -> ((40, 80), None); a bad entry -> ((), message)."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts), None
    except ValueError:
        return (), f"lr milestones must be whole epochs separated by commas, like 40, 80; got {text!r}"
