"""The Launch page's logic, generated from the run spec and the loss registry (no Streamlit).

The form is a flat dict of values, one per ``Knob``:

- every field of ``gce_core.spec.RunSpec`` (type, range, default and description read from the
  model), except ``loss`` (one run per chosen loss), the loss parameters (below) and the fields
  a browser must not set (``NOT_IN_FORM``);
- ``"<loss>.<param>"`` for every parameter of every loss of ``gce_core.losses.LOSSES`` (range,
  default and help read from its ``Param``), so each loss keeps its own values;
- the form's own: ``losses`` (any registry losses), ``seeds`` (runs per loss, seeds ``seed`` ..
  ``seed + seeds - 1``), ``sweep`` and ``sweep_values`` (one run per value of noise_rate or of a
  loss parameter).

A new spec field or a new loss (with new parameters) therefore appears in the form, its URL and
its checks with no change here. Presets come from ``gce_core.spec.PRESETS`` (per data set);
``LAUNCH_DEFAULTS`` only adds what a gce_core preset does not say: which losses, how many seeds,
which noise. ``build_specs`` expands the values into validated specs and reports each problem
once, named with the form's words.
"""

from __future__ import annotations

import hashlib
import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import annotated_types
import torch

from gce_core import spec as gspec
from gce_core.data import (
    DATASETS,
    DatasetFileError,
    DatasetNotFoundError,
    available_datasets,
    check_available,
    dataset_info,
    dataset_label,
)
from gce_core.data import train_size as data_train_size
from gce_core.experiment_data import noise_preview
from gce_core.losses import LOSSES, Param, get_loss
from gce_core.models import MODEL_NAMES, flops_hint
from gce_core.noise import (
    CLASS_MAP_NAMES,
    HUMAN_LABEL_SETS,
    NOISE_KINDS,
    NOISE_LABELS,
    USER_NOISY_LABELS,
    check_noise,
    class_map,
    expected_transition,
)
from gce_core.spec import RunSpec, SpecError, parse_spec, preset_fields

Values = dict[str, Any]

# RunSpec fields the form never sets: the loss (one run per chosen loss); paths and downloads
# (no path is typed in a browser, and the lab works offline: the data check says how to get a
# data set); the device (the executor gives each run its slot's device).
NOT_IN_FORM = ("loss", "data_root", "download", "device")
# Where a choice field's values come from: gce_core's own tuples, read at each call so that a
# kind added there appears here. A Literal field (optimizer) needs no entry.
CHOICES: dict[str, Callable[[], Sequence[str]]] = {
    "dataset": lambda: available_datasets(),  # the built-in ones, then the user's own in the data folder
    "model": lambda: MODEL_NAMES,
    "noise": lambda: NOISE_KINDS,
    "class_map": lambda: CLASS_MAP_NAMES,
    "open_set_source": lambda: gspec.OPEN_SET_SOURCES,
    "human_labels": lambda: tuple(dict.fromkeys(n for sets in (*HUMAN_LABEL_SETS.values(), (USER_NOISY_LABELS,)) for n in sets)),
}
class _DatasetLabels(dict):
    """gce_core's menu label of any data set, the user's own included (reads no file)."""

    def get(self, key, default=None):
        return dataset_label(key) if isinstance(key, str) else default

    def __contains__(self, key) -> bool:
        return False  # never a word inside a message (label_problem)

    def values(self):
        return ()


# Nicer words for some fields; any other field is labelled from its name ("prune_every" ->
# "Prune every").
LABELS = {
    "name": "Run name (optional)", "dataset": "Data set", "noise": "Label noise", "noise_rate": "Noise rate η",
    "class_map": "Class map", "open_set_source": "Open-set images", "train_subset": "Training subset (0 = all)",
    "val_fraction": "Validation share", "lr": "Learning rate", "lr_milestones": "LR milestones (epochs)",
    "lr_gamma": "LR gamma", "seed": "First seed", "compile": "torch.compile", "augment": "Augment",
    "prune_start": "Prune start (epoch)", "prune_every": "Prune every (epochs)", "optimizer": "Optimiser",
    "seeds": "Seeds per loss", "losses": "Losses to compare", "sweep": "Sweep over", "sweep_values": "Sweep values",
}
CHOICE_LABELS = {
    "dataset": _DatasetLabels(),
    "noise": NOISE_LABELS,
    "sweep": {"": "(no sweep)", "noise_rate": "noise rate η"},
}
NONE_CHOICE = {"class_map": "(data set default)", "human_labels": "(the data set's default)"}  # what None means for an optional choice
MAIN_FIELDS = ("dataset", "model", "noise", "noise_rate", "class_map", "open_set_source", "human_labels", "human_twin",
               "epochs", "name")
SHOWN_WHEN = {"class_map": ("noise", "class_dependent"), "open_set_source": ("noise", "open_set"),
              "human_labels": ("noise", "human"), "human_twin": ("noise", "human")}
MAX_SEEDS = 10
MAX_SWEEP_VALUES = 20
RATE_STEP = 0.05  # the noise-rate slider's step; its top is the highest step the noise allows
CONFIRM_SECONDS = 3600.0  # launches estimated longer than this ask for a confirmation

# What a gce_core preset does not say: the losses, seeds and noise the form starts with.
LAUNCH_DEFAULTS: dict[str, Values] = {
    "quick": {"noise": "uniform", "noise_rate": 0.4, "losses": ("cce", "mae", "lq"), "seeds": 1},
    "paper": {"noise": "uniform", "noise_rate": 0.4, "losses": ("cce", "lq", "truncated_lq"), "seeds": 5},
}
PRESET_HELP = {
    "quick": "Small runs: seconds on a CPU for digits, minutes for the others (a training subset, a small CNN).",
    "paper": "The paper's protocol for the data set: SGD lr 0.01, its epochs and lr steps, ResNet for the "
             "image data sets, CCE / Lq / truncated Lq, 5 seeds. Needs a GPU beyond digits.",
}
DEFAULT_PRESET = "quick"
DEFAULT_DATASET = "digits"
PAPER_LOSSES = ("cce", "mae", "lq", "truncated_lq")
FORM_LOSSES = PAPER_LOSSES  # the Theory page's curves (its own loss list); the form offers every loss

# Sizes of the test splits (training sizes: gce_core.data.train_size); a user's own data set is
# estimated with a fifth of its training size.
TEST_SIZES = {"digits": 360, "mnist5k": 1000, "fashion_mnist": 10000, "cifar10": 10000, "cifar100": 10000}
# Rough throughput of one run (one worker slot): sustained FLOP/s, overhead per batch, start-up
# (process, imports, data). Calibrated on the quick digits demo on a 2-core CPU (~0.1 s/epoch).
DEVICE_SPEED = {
    "cpu": {"flops": 1.5e10, "per_batch": 4e-3, "startup": 6.0},
    "cuda": {"flops": 4e13, "per_batch": 1.5e-3, "startup": 15.0},
}


# --- knobs: one per form value -----------------------------------------------------------------
@dataclass(frozen=True)
class Knob:
    """One value of the form. kind: bool, int, float, choice, multi (several choices), text,
    ints or floats (comma-separated lists). The range [low, high] (each end open or closed) holds
    for numbers, and for each entry of a floats list."""

    key: str
    kind: str
    default: Any
    label: str
    help: str = ""
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False  # None allowed (shown as 0 or NONE_CHOICE)
    max_chars: int | None = None
    why: str = ""  # why the range is what it is, when it depends on other values

    @property
    def bounded(self) -> bool:
        return self.kind in ("int", "float", "floats") and (math.isfinite(self.low) or math.isfinite(self.high))

    @property
    def range_text(self) -> str:
        def num(x: float) -> str:
            return f"{x:g}" if math.isfinite(x) else ("-inf" if x < 0 else "inf")

        lo = "(" if self.low_open or not math.isfinite(self.low) else "["
        hi = ")" if self.high_open or not math.isfinite(self.high) else "]"
        return f"{lo}{num(self.low)}, {num(self.high)}{hi}"

    def contains(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def clamp(self, x: float) -> float | None:
        """The nearest value in range, or None when that end is open (no nearest value)."""
        if self.contains(x):
            return x
        if x < self.low or (x == self.low and self.low_open):
            return None if self.low_open else self.low
        return None if self.high_open else self.high

    def choice_label(self, value: Any) -> str:
        if value is None:
            return NONE_CHOICE.get(self.key, "(default)")
        if self.key == "losses" and value in LOSSES:
            return LOSSES[value].label
        return CHOICE_LABELS.get(self.key, {}).get(value, str(value))


def _label(name: str) -> str:
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def _bounds(info) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            out.update(low=float(m.ge), low_open=False)
        elif isinstance(m, annotated_types.Gt):
            out.update(low=float(m.gt), low_open=True)
        elif isinstance(m, annotated_types.Le):
            out.update(high=float(m.le), high_open=False)
        elif isinstance(m, annotated_types.Lt):
            out.update(high=float(m.lt), high_open=True)
        elif isinstance(m, annotated_types.MaxLen):
            out.update(max_chars=m.max_length)
    return out


def _field_knob(name: str, info) -> Knob:
    """A RunSpec field as a knob: its annotation gives the kind, its constraints the range."""
    annotation = info.annotation
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    common = dict(key=name, default=info.default, label=_label(name), help=info.description or "", optional=optional, **_bounds(info))
    if typing.get_origin(base) is typing.Literal:
        return Knob(kind="choice", choices=tuple(typing.get_args(base)), **common)
    if name in CHOICES:
        return Knob(kind="choice", choices=tuple(CHOICES[name]()), **common)
    if base is bool:
        return Knob(kind="bool", **common)
    if base is int:
        return Knob(kind="int", **common)
    if base is float:
        return Knob(kind="float", **common)
    if typing.get_origin(base) is tuple:
        return Knob(kind="ints", **common)
    return Knob(kind="text", **common)


def _param_knob(loss_name: str, p: Param) -> Knob:
    loss = LOSSES[loss_name]
    return Knob(
        key=f"{loss_name}.{p.name}", kind="float", default=p.default, label=f"{loss.label} {p.name}",
        help=p.help, low=p.low, high=p.high, low_open=p.low_open, high_open=p.high_open,
    )


def loss_param_names() -> tuple[str, ...]:
    """Every parameter name some registry loss takes, in registry order."""
    return tuple(dict.fromkeys(p.name for loss in LOSSES.values() for p in loss.params))


def form_fields() -> tuple[str, ...]:
    """The RunSpec fields the form sets (every one but NOT_IN_FORM and the loss parameters)."""
    params = set(loss_param_names())
    return tuple(f for f in RunSpec.model_fields if f not in NOT_IN_FORM and f not in params)


def max_noise_rate(noise: str, num_classes: int) -> float:
    """The highest step of the noise-rate slider that ``noise`` accepts on c classes (the noise's
    own check decides, so a new kind needs nothing here); 1 - step for kinds that ignore it."""
    steps = [round(i * RATE_STEP, 10) for i in range(round(1 / RATE_STEP))]
    ok = []
    for rate in steps:
        try:
            check_noise(noise, rate, num_classes)
        except ValueError:
            continue
        ok.append(rate)
    return max(ok) if ok else 0.0


def _info(dataset):
    """The data set's DatasetInfo (the user's own: read once, cached), or None if unknown or bad."""
    try:
        return dataset_info(dataset)
    except (ValueError, DatasetFileError, DatasetNotFoundError):
        return None


def num_classes(values: Mapping[str, Any]) -> int:
    info = _info(values.get("dataset"))
    return info.num_classes if info else 10


def knobs(values: Mapping[str, Any] | None = None) -> dict[str, Knob]:
    """Every knob of the form, by key. With ``values``, ranges that depend on other values follow
    them (the noise rate's top follows the noise kind and the data set's classes)."""
    out: dict[str, Knob] = {}
    for name in form_fields():
        out[name] = _field_knob(name, RunSpec.model_fields[name])
    if values is not None and "noise" in values:
        kind = values["noise"]
        top = max_noise_rate(kind, num_classes(values))
        words = CHOICE_LABELS["noise"].get(kind, kind)
        out["noise_rate"] = replace(out["noise_rate"], high=top, high_open=False, why=f"for {words} noise")
    out["losses"] = Knob("losses", "multi", ("lq",), _label("losses"), "One run per loss (and seed).", choices=tuple(LOSSES))
    out["seeds"] = Knob("seeds", "int", 1, _label("seeds"), "Runs per loss, for mean ± std over seeds.", low=1, high=MAX_SEEDS)
    sweepable = ("noise_rate", *loss_param_names())
    out["sweep"] = Knob("sweep", "choice", "", _label("sweep"), "One run per value (per loss that takes the parameter, and per seed).",
                        choices=("", *sweepable))
    out["sweep_values"] = Knob("sweep_values", "floats", (), _label("sweep_values"), "Comma-separated, e.g. 0.1, 0.4, 0.7, 1.0.")
    for loss_name, loss in LOSSES.items():
        for p in loss.params:
            knob = _param_knob(loss_name, p)
            out[knob.key] = knob
    return out


# --- presets -----------------------------------------------------------------------------------
def preset_names() -> tuple[str, ...]:
    return tuple(gspec.PRESETS)


def defaults(preset: str = DEFAULT_PRESET, dataset: str = DEFAULT_DATASET) -> Values:
    """The form's values for gce_core preset ``preset`` on ``dataset``: RunSpec's and the
    registry's defaults, then the preset's fields for that data set, then LAUNCH_DEFAULTS."""
    values: Values = {key: knob.default for key, knob in knobs().items()}
    values.update(LAUNCH_DEFAULTS.get(preset, LAUNCH_DEFAULTS[DEFAULT_PRESET]))
    dataset = dataset if dataset in available_datasets() else DEFAULT_DATASET
    if preset_note(preset, dataset):  # the preset has no settings for it: its first data set
        dataset = next((d for d in gspec.PRESETS.get(preset, {}) if d in DATASETS), dataset)
    values["dataset"] = dataset
    values.update(preset_values(preset, dataset))
    return values


def preset_note(preset: str, dataset: str) -> str | None:
    """Why ``preset`` has no settings for ``dataset`` (gce_core's words), or None."""
    try:
        preset_fields(preset, dataset)
    except (KeyError, ValueError) as exc:
        problems = getattr(exc, "problems", None)
        return problems[0][1] if problems else str(exc)
    return None


def preset_values(preset: str, dataset: str) -> Values:
    """The form values gce_core's preset sets for ``dataset`` ({} if it has none for it)."""
    try:
        fields = preset_fields(preset, dataset)
    except (KeyError, ValueError):
        return {}
    out: Values = {}
    for key, value in fields.items():
        if key == "loss":
            out["losses"] = (get_loss(value).name,)
        elif key in loss_param_names():
            for name, loss in LOSSES.items():
                if any(p.name == key for p in loss.params):
                    out[f"{name}.{key}"] = float(value)
        elif key in RunSpec.model_fields and key not in NOT_IN_FORM:
            out[key] = tuple(value) if isinstance(value, list) else value
    return out


def with_epochs(values: Mapping[str, Any], preset: str, epochs: int) -> Values:
    """``values`` with another number of epochs: the schedule fields still at the preset's values
    (lr milestones, pruning start and period) move to the same fractions of the new run, as
    ``gce_core.spec.from_preset`` does; ones the user changed stay."""
    out = dict(values, epochs=epochs)
    try:
        fields = preset_fields(preset, values["dataset"])
    except (KeyError, ValueError):
        return out
    before = gspec.scale_schedule(fields, values["epochs"])
    after = gspec.scale_schedule(fields, epochs)
    for key in ("lr_milestones", "prune_start", "prune_every"):
        if key in after and _same(values.get(key), before.get(key)):
            out[key] = tuple(after[key]) if isinstance(after[key], (list, tuple)) else after[key]
    return out


def _same(a: Any, b: Any) -> bool:
    return (tuple(a) if isinstance(a, (list, tuple)) else a) == (tuple(b) if isinstance(b, (list, tuple)) else b)


def with_dataset(values: Mapping[str, Any], preset: str, dataset: str) -> Values:
    """``values`` moved to another data set: the preset's fields for it replace the current ones
    (model, epochs, lr...), the class map goes back to the data set's default."""
    out = dict(values)
    out.update(dataset=dataset, class_map=None)
    out.update(preset_values(preset, dataset))
    return out


# --- values -> specs -------------------------------------------------------------------------
def loss_params(values: Mapping[str, Any], loss: str) -> dict[str, float]:
    """The form's values of ``loss``'s own parameters."""
    return {p.name: values.get(f"{loss}.{p.name}", p.default) for p in LOSSES[loss].params}


def spec_fields(values: Mapping[str, Any], loss: str, seed: int, **changes: Any) -> dict[str, Any]:
    """The spec dict of one run of the form: one loss (with its own parameters), one seed."""
    data = {f: values[f] for f in form_fields() if f in values}
    data.update(loss_params(values, loss))
    data.update(loss=loss, seed=seed, **changes)
    if "lr_milestones" in data:
        data["lr_milestones"] = list(data["lr_milestones"])
    if data.get("noise") != "class_dependent":
        data["class_map"] = None
    return data


def label_problem(key: str, message: str, ks: Mapping[str, Knob] | None = None) -> str:
    """'Noise rate η: must be ...': the form's name of the value, then the message (alone when
    it concerns several values, like the milestones against the epochs)."""
    ks = ks or knobs()
    knob = ks.get(key)
    message = in_form_words(message, ks)
    return f"{knob.label}: {message}" if knob else message


_IDENTIFIER = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")


def in_form_words(message: str, ks: Mapping[str, Knob] | None = None) -> str:
    """A gce_core message with the identifiers it names (lr_milestones, class_dependent) in the
    words the form shows for them (LR milestones (epochs), class-dependent)."""
    ks = ks or knobs()

    def word(match: re.Match) -> str:
        name = match.group(0)
        if name in ks:
            return ks[name].label
        for labels in CHOICE_LABELS.values():
            if name in labels:
                return labels[name].split(" (")[0]
        return name

    return _IDENTIFIER.sub(word, message)


def sweep_plan(values: Mapping[str, Any], loss: str) -> list[dict[str, float]]:
    """The changes of each run of ``loss`` at one seed: [{}] without a sweep (or when ``loss``
    does not take the swept parameter: it runs once, as a reference), else one per value."""
    field, points = values.get("sweep") or "", tuple(values.get("sweep_values") or ())
    if not field or not points:
        return [{}]
    if field == "noise_rate" or field in loss_params(values, loss):
        return [{field: float(v)} for v in points]
    return [{}]


def build_specs(values: Mapping[str, Any]) -> tuple[list[RunSpec], list[tuple[str, str]]]:
    """Expand the form into specs: losses x sweep values x seeds. Returns (specs, problems);
    when problems is not empty nothing should be submitted. Each problem is (knob key, message),
    once however many runs share it; ``label_problem`` words it for the page."""
    problems: list[tuple[str, str]] = []

    def add(key: str, msg: str) -> None:
        if (key, msg) not in problems:
            problems.append((key, msg))

    losses = tuple(values.get("losses") or ())
    seeds = int(values.get("seeds") or 0)
    if not losses:
        add("losses", f"pick at least one loss ({', '.join(LOSSES)})")
    if not 1 <= seeds <= MAX_SEEDS:
        add("seeds", f"must be 1 to {MAX_SEEDS}, got {seeds}")
    field, points = values.get("sweep") or "", tuple(values.get("sweep_values") or ())
    if field:
        if not points:
            add("sweep_values", f"list the values of {field} to sweep over, e.g. 0.1, 0.4, 0.7")
        elif len(points) > MAX_SWEEP_VALUES:
            add("sweep_values", f"at most {MAX_SWEEP_VALUES} values, got {len(points)}")
        elif field != "noise_rate" and not any(field in loss_params(values, loss) for loss in losses):
            takers = [LOSSES[n].label for n, loss in LOSSES.items() if any(p.name == field for p in loss.params)]
            add("sweep", f"none of the chosen losses takes {field}; pick one that does ({', '.join(takers)})")
    # The noise rate is checked here, not only by the spec, so that its problem names the rate
    # (the spec names the whole spec for a check across fields).
    rates = [("noise_rate", values.get("noise_rate"))]
    if field == "noise_rate":
        rates = [("sweep_values", v) for v in points]
    for key, rate in rates:
        try:
            check_noise(values.get("noise"), rate, num_classes(values))
        except ValueError as exc:
            add(key, str(exc))
    if problems:
        return [], problems
    specs: list[RunSpec] = []
    first = int(values.get("seed") or 0)
    for loss in losses:
        for change in sweep_plan(values, loss):
            for i in range(max(0, min(seeds, MAX_SEEDS))):
                try:
                    specs.append(parse_spec(spec_fields(values, loss, first + i, **change)))
                except SpecError as exc:
                    for key, msg in exc.problems:
                        if key == field and field in change:
                            key = "sweep_values"
                        elif key in LOSSES[loss].defaults:
                            key = f"{loss}.{key}"
                        add(key, msg)
    return specs, problems


def fingerprint(specs: Sequence[RunSpec]) -> str:
    """Identifies a launch's specs (a confirmation holds only for the specs it was asked for)."""
    return hashlib.sha256("\n".join(s.to_json() for s in specs).encode()).hexdigest()[:16]


def advice(values: Mapping[str, Any]) -> list[str]:
    """Warnings that do not block a launch (the runs would run, perhaps not as intended)."""
    notes = []
    info = _info(values.get("dataset"))
    losses = tuple(values.get("losses") or ())
    if "mae" in losses and info is not None and info.num_classes >= 100:
        notes.append("MAE barely trains on 100 classes (the paper's point); expect low accuracy.")
    field = values.get("sweep") or ""
    if field and field != "noise_rate":
        once = [LOSSES[n].label for n in losses if field not in loss_params(values, n)]
        if once:
            verb = "takes" if len(once) == 1 else "take"
            notes.append(f"{', '.join(once)} {verb} no {field}: one run each per seed, as a reference.")
    return notes


def data_problem(dataset: str, root) -> str | None:
    """None when the data set's files are in the data folder ``root``, else what is missing and
    how to get it (a cheap check: no file is read)."""
    try:
        check_available(dataset, root)
    except DatasetNotFoundError as exc:
        return str(exc)
    return None


# --- noise preview ---------------------------------------------------------------------------
def noise_matrix(values: Mapping[str, Any]) -> torch.Tensor:
    """The (C, C) transition matrix the chosen noise produces in expectation (rows: clean label,
    columns: noisy label). Raises ValueError when the noise is not valid for the data set or has
    no expected matrix."""
    info = _info(values["dataset"])
    if info is None:
        raise ValueError(f"unknown or unreadable data set {values['dataset']!r}")
    cmap = values.get("class_map") if values.get("noise") == "class_dependent" else None
    return expected_transition(values["noise"], values["noise_rate"], info.num_classes, cmap, dataset=info.name)


def wrong_label_share(matrix: torch.Tensor) -> float:
    """Expected share of wrong training labels for balanced classes: 1 - mean(diag)."""
    return float(1.0 - matrix.diagonal().mean())


def human_label_choices(dataset: str) -> list[str]:
    """The human label sets of the data set: CIFAR-N's, or a user's npz's y_train_noisy."""
    if dataset in HUMAN_LABEL_SETS:
        return list(HUMAN_LABEL_SETS[dataset])
    info = _info(dataset)
    return [USER_NOISY_LABELS] if info is not None and getattr(info, "has_noisy_labels", False) else []


def realised_noise(values: Mapping[str, Any], specs: Sequence[RunSpec]):
    """For noise whose matrix depends on the data (instance, human): gce_core's NoisePreview of
    the first spec (the realised matrix, rates, class names; loads the data set once, cached), else
    None. Raises what loading raises (DatasetNotFoundError, DatasetFileError)."""
    if values.get("noise") not in ("instance", "human") or not specs:
        return None
    return noise_preview(specs[0])


def class_map_choices(dataset: str) -> list[str]:
    """The class maps that fit the data set's number of classes."""
    info = _info(dataset)
    c = info.num_classes if info else 10
    ok = []
    for name in CLASS_MAP_NAMES:
        try:
            class_map(name, c)
        except ValueError:
            continue
        ok.append(name)
    return ok


# --- run-time estimate -----------------------------------------------------------------------
def device_kind(devices: Sequence[str]) -> str:
    """"cuda" when the executor lists a CUDA device, else "cpu"."""
    return "cuda" if any(str(d).startswith("cuda") for d in devices) else "cpu"


def epoch_seconds(spec: RunSpec, kind: str = "cpu") -> float | None:
    """Rough seconds of one epoch on one slot: training (3x forward FLOPs) plus evaluation of
    validation and test, plus a fixed cost per batch. None for a data set of unknown size."""
    speed = DEVICE_SPEED[kind]
    info = _info(spec.dataset)
    try:
        n = data_train_size(spec.dataset)
    except (ValueError, KeyError, DatasetFileError, DatasetNotFoundError):
        return None
    if info is None:
        return None
    if spec.train_subset:
        n = min(n, spec.train_subset)
    n_val = round(spec.val_fraction * n)
    n_train = n - n_val
    per_image = flops_hint(spec.model, info.image_shape, info.num_classes)
    flops = per_image * (3 * n_train + n_val + TEST_SIZES.get(spec.dataset, n // 5))
    batches = math.ceil(n_train / spec.batch_size)
    return flops / speed["flops"] + batches * speed["per_batch"]


def run_seconds(spec: RunSpec, kind: str = "cpu") -> float | None:
    """Rough seconds of a whole run on one slot, start-up included (None: unknown)."""
    epoch = epoch_seconds(spec, kind)
    return None if epoch is None else DEVICE_SPEED[kind]["startup"] + spec.epochs * epoch


def total_seconds(specs: Sequence[RunSpec], slots: int, kind: str = "cpu") -> float | None:
    """Wall time until all ``specs`` finish on ``slots`` parallel slots (longest first, each to
    the least busy slot). 0 for no specs, None when a run's time is unknown."""
    loads = [0.0] * max(1, slots)
    times = [run_seconds(s, kind) for s in specs]
    if any(t is None for t in times):
        return None
    for seconds in sorted(times, reverse=True):
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


def lab_limit_problems(specs: Sequence[RunSpec], max_epochs: int, max_group_size: int) -> list[str]:
    """The lab's own limits (``jobs.config.Limits``) the launch would pass, said before Launch."""
    out = []
    epochs = max((s.epochs for s in specs), default=0)
    if epochs > max_epochs:
        out.append(f"Epochs: {epochs} is over this lab's limit of {max_epochs} epochs per run "
                   "(GCE_LAB_MAX_EPOCHS, set before starting the lab).")
    if len(specs) > max_group_size:
        out.append(f"{len(specs)} runs in one launch is over this lab's limit of {max_group_size} "
                   "(GCE_LAB_MAX_GROUP_SIZE); pick fewer losses, seeds or sweep values.")
    return out


def session_cap_problem(active: int, new: int, cap: int) -> str | None:
    """'n runs over your cap ...' when ``new`` more runs would take this browser past ``cap``
    queued or running runs, else None."""
    over = active + new - cap
    if over <= 0:
        return None
    left = max(0, cap - active)
    return (
        f"{over} run(s) over your cap: this browser has {active} run(s) queued or running and may "
        f"have {cap}, so at most {left} more now. Pick fewer losses, seeds or sweep values, or wait "
        "for some runs to finish (the Runs page can cancel them)."
    )


# --- widget values ---------------------------------------------------------------------------
def to_widget(knob: Knob, value: Any) -> Any:
    """A form value as its widget holds it: lists as text, None as 0 or '' (the default choice)."""
    if knob.kind in ("ints", "floats"):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value or ())
    if knob.kind == "multi":
        return list(value or ())
    if value is None and knob.optional:
        return 0 if knob.kind == "int" else ""
    return value


def from_widget(knob: Knob, shown: Any) -> tuple[Any, str | None]:
    """(form value, None), or (None, problem) for text that does not parse."""
    if knob.kind in ("ints", "floats"):
        conv = int if knob.kind == "ints" else float
        try:
            items = tuple(conv(p) for p in str(shown).replace(";", ",").split(",") if p.strip())
        except ValueError:
            example = "40, 80" if knob.kind == "ints" else "0.1, 0.4, 0.7"
            words = "whole numbers" if knob.kind == "ints" else "numbers"
            return None, f"must be {words} separated by commas, like {example}; got {shown!r}"
        if knob.kind == "floats":
            items = tuple(dict.fromkeys(items))
            if not all(math.isfinite(v) for v in items):
                return None, f"must be finite numbers; got {shown!r}"
        return items, None
    if knob.kind == "multi":
        return tuple(shown or ()), None
    if knob.optional and shown in (0, ""):
        return None, None
    return shown, None


def step(knob: Knob) -> float:
    """A number input's step: the order of magnitude of the default (0.1 for 0.7, 1e-4 for 1e-4)."""
    magnitude = abs(float(knob.default or 0.0))
    return 10.0 ** math.floor(math.log10(magnitude)) if magnitude else 0.1
