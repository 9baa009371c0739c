"""RunSpec: everything one training run needs, validated once, serialisable to JSON.

A spec flows one way (UI -> store -> worker -> trainer) and nobody downstream re-interprets it.
Unknown keys are refused; invalid values are refused with the field's name and the allowed range.
Defaults that depend on other fields (the class-dependent map of a data set) are resolved at
validation, so the saved JSON says exactly what ran.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gce_core.data import DATASETS, dataset_info
from gce_core.losses import (
    LOSS_FORMULAS,
    LOSS_NAMES,
    LOSSES,
    canonical_loss_name,
    check_k,
    check_q,
    get_loss,
)
from gce_core.messages import clip, clip_quotes
from gce_core.models import MODEL_NAMES
from gce_core.noise import (
    CLASS_MAP_NAMES,
    HUMAN_LABEL_SETS,
    NOISE_KINDS,
    USER_NOISY_LABELS,
    check_noise,
    default_class_map,
)

MAX_EPOCHS = 5000
# Loss parameters that are None until validation fills in the loss's default (k is always a
# number: only truncated Lq takes it, with one meaning).
OTHER_LOSS_PARAMS = ("q", "alpha", "beta", "A", "a", "p", "est_share")
OPEN_SET_SOURCES = ("noise", "cifar10", "cifar100")


def _param_help(name: str, meaning: str) -> str:
    """A loss parameter's help: its meaning, and each loss's default and range for it."""
    takers = [(loss.name, p) for loss in LOSSES.values() for p in loss.params if p.name == name]
    defaults = ", ".join(f"{loss} {p.default:g} in {p.range_text}" for loss, p in takers)
    return f"{meaning}; default per loss: {defaults} (unset: the loss's default)"


class _ParamError(ValueError):
    """A loss parameter out of its range; ``field`` names it for SpecError."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class SpecError(ValueError):
    """A spec was refused. ``problems`` holds (field, message) pairs; str() is one line."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{field}: {msg}" for field, msg in problems))


class RunSpec(BaseModel):
    """One training run. Every field has a default; see docs/library.md, "The run spec", for the full table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("", max_length=200, description="free text shown in the lab")
    # data
    dataset: str = Field("digits", description=f"one of {', '.join(DATASETS)}, or the name of your own data set "
                         "in the data folder (NAME.npz or an image folder NAME/)")
    data_root: str | None = Field(None, description="folder with the data sets (default: $GCE_LAB_DATA or ~/.gce_lab/data)")
    download: bool = Field(False, description="let torchvision download the data set (needs internet)")
    train_subset: int | None = Field(None, ge=20, description="use only this many training images (seeded), for quick runs")
    val_fraction: float = Field(0.1, gt=0.0, le=0.5, description="share of the training set held out for validation; its labels are noisy too")
    # label noise
    noise: str = Field("none", description=f"one of {', '.join(NOISE_KINDS)}")
    noise_rate: float = Field(0.0, ge=0.0, lt=1.0, description="eta in [0, 1)")
    class_map: str | None = Field(None, description=f"class-dependent map, one of {', '.join(CLASS_MAP_NAMES)} (default: the data set's)")
    human_labels: str | None = Field(None, description="human noise: the label set, CIFAR-10N "
                                     f"{', '.join(HUMAN_LABEL_SETS['cifar10'])}; CIFAR-100N noisy_label; "
                                     f"your npz: {USER_NOISY_LABELS} (default: the first)")
    human_twin: bool = Field(False, description="human noise: its synthetic twin instead, class-dependent noise drawn "
                             "(seeded) from the human labels' realised transition matrix")
    open_set_source: str = Field("noise", description=f"images used for open-set noise, one of {', '.join(OPEN_SET_SOURCES)}")
    # loss
    loss: str = Field("lq", description=f"one of {', '.join(LOSS_NAMES)} (alias gce = lq, ce = cce)")
    k: float = Field(0.5, description="truncation threshold of truncated Lq, in (0, 1)")
    # The losses' parameters: None until validation, which fills in the loss's default (so the
    # saved JSON says what ran); left None for a loss that does not take them.
    q: float | None = Field(None, description=_param_help("q", "exponent of Lq, truncated Lq and AGCE"))
    alpha: float | None = Field(None, description=_param_help("alpha", "weight of the active term (CE or NCE)"))
    beta: float | None = Field(None, description=_param_help(
        "beta", "weight of the passive term (RCE or MAE); bootstrapping: weight of the given label"))
    A: float | None = Field(None, description=_param_help("A", "log 0 in RCE"))
    a: float | None = Field(None, description=_param_help("a", "offset of agce and aul"))
    p: float | None = Field(None, description=_param_help("p", "exponent of aul"))
    est_share: float | None = Field(None, description=_param_help(
        "est_share", "forward_est: share of the epochs trained with CCE before T is estimated"))
    prune_start: int = Field(40, ge=1, description="truncated Lq: first epoch of the w-step (pruning)")
    prune_every: int = Field(10, ge=1, description="truncated Lq: epochs between w-steps")
    # model and optimisation
    model: str = Field("mlp", description=f"one of {', '.join(MODEL_NAMES)}")
    epochs: int = Field(100, ge=1, le=MAX_EPOCHS, description=f"training epochs, 1 to {MAX_EPOCHS}")
    batch_size: int = Field(128, ge=1, le=65536, description="training batch size")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="sgd (the paper's) or adam")
    lr: float = Field(0.01, gt=0.0, le=10.0, description="initial learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0, description="L2 weight decay")
    lr_milestones: tuple[int, ...] = Field((), description="epochs after which the lr is multiplied by lr_gamma")
    lr_gamma: float = Field(0.1, gt=0.0, le=1.0, description="lr factor at each milestone")
    augment: bool = Field(False, description="pad-4 random crop and horizontal flip, on the device")
    # execution
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds the noise, the split, the init and the data order")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["bf16", "float32"] = Field(
        "bf16", description="arithmetic on CUDA: bf16 (autocast, faster) or float32 (as the paper ran); CPU "
        "runs always compute in float32")
    compile: bool = Field(False, description="torch.compile the model's training forward (pays off on CUDA for "
                          "long runs; a long-lived run process keeps the compiled graphs for its later runs of "
                          "the same shapes)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.isprintable():  # control characters (terminal escapes), invisible ones, lone surrogates
            raise ValueError("a name is printable text: no control or invisible characters")
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if v in DATASETS:
            return v
        if not isinstance(v, str) or not v:
            raise ValueError(f"dataset must be a name, got {v!r}")
        return v  # the user's own: checked with data_root in _consistent

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        return canonical_loss_name(v)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if v not in MODEL_NAMES:
            raise ValueError(f"unknown model {v!r}; allowed: {', '.join(MODEL_NAMES)}")
        return v

    @field_validator("noise")
    @classmethod
    def _noise(cls, v: str) -> str:
        if v not in NOISE_KINDS:
            raise ValueError(f"unknown noise {v!r}; allowed: {', '.join(NOISE_KINDS)}")
        return v

    @field_validator("class_map")
    @classmethod
    def _class_map(cls, v: str | None) -> str | None:
        if v is not None and v not in CLASS_MAP_NAMES:
            raise ValueError(f"unknown class map {v!r}; allowed: {', '.join(CLASS_MAP_NAMES)}")
        return v

    @field_validator("open_set_source")
    @classmethod
    def _open_set_source(cls, v: str) -> str:
        if v not in OPEN_SET_SOURCES:
            raise ValueError(f"unknown source {v!r}; allowed: {', '.join(OPEN_SET_SOURCES)}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    @model_validator(mode="after")
    def _loss_params(self) -> RunSpec:
        # The loss's registry entry checks its parameters, once, and fills in its defaults. A q
        # or k given to a loss that does not take them must still be a valid Lq setting (a grid
        # or a form can carry it to Lq).
        loss = get_loss(self.loss)
        given = {p.name: getattr(self, p.name) for p in loss.params if getattr(self, p.name) is not None}
        try:
            for name, check in (("q", check_q), ("k", check_k)):
                if name not in given and getattr(self, name) is not None:
                    check(getattr(self, name))
            for name, value in given.items():
                loss.check_params(**{name: value})
        except ValueError as exc:
            raise _ParamError(name, str(exc)) from None
        for name, value in loss.check_params(**given).items():
            object.__setattr__(self, name, value)
        return self

    @model_validator(mode="after")
    def _consistent(self) -> RunSpec:
        try:
            info = dataset_info(self.dataset, self.data_root)
        except ValueError as exc:  # an unknown name, or the user's file is unusable
            raise _ParamError("dataset", str(exc)) from None
        check_noise(self.noise, self.noise_rate, info.num_classes)
        if self.noise == "class_dependent" and self.class_map is None:
            object.__setattr__(self, "class_map", default_class_map(self.dataset))
        self._check_human(info)
        if self.noise == "open_set" and self.open_set_source != "noise":
            src = DATASETS[self.open_set_source]
            if src.image_shape != info.image_shape or src.name == info.name:
                raise ValueError(
                    f"open_set_source {src.name!r} cannot be mixed into {info.name!r} "
                    f"(images {src.image_shape} vs {info.image_shape}); use 'noise'"
                )
        ms = self.lr_milestones
        if any(m <= 0 or m >= self.epochs for m in ms) or list(ms) != sorted(set(ms)):
            raise ValueError(
                f"lr_milestones must be increasing epochs in [1, epochs - 1] = [1, {self.epochs - 1}], got {list(ms)}"
            )
        check_run = get_loss(self.loss).check_run  # the rest of the run must suit the loss
        problem = None if check_run is None else check_run(self)
        if problem is not None:
            raise _ParamError(*problem)
        return self

    def _check_human(self, info) -> None:
        if self.noise != "human":
            if self.human_labels is not None or self.human_twin:
                raise _ParamError("human_labels", f"human_labels and human_twin belong to human noise, not {self.noise!r}")
            return
        sets = HUMAN_LABEL_SETS.get(info.name, (USER_NOISY_LABELS,) if info.has_noisy_labels else ())
        if not sets:
            raise _ParamError("noise", f"human noise needs people's labels: CIFAR-10N or CIFAR-100N with cifar10 or "
                              f"cifar100, or your own npz with {USER_NOISY_LABELS}; {info.name} has none")
        if self.human_labels is None:
            object.__setattr__(self, "human_labels", sets[0])
        elif self.human_labels not in sets:
            raise _ParamError("human_labels", f"unknown label set {self.human_labels!r} for {info.name}; "
                              f"allowed: {', '.join(sets)}")

    # --- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        return self.model_dump_json()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @property
    def num_classes(self) -> int:
        return dataset_info(self.dataset, self.data_root).num_classes

    @property
    def loss_formula(self) -> str:
        return LOSS_FORMULAS[self.loss]

    def loss_params(self) -> dict[str, float]:
        """Exactly the parameters of the spec's loss, by name: {'q': 0.7} for lq, {} for cce."""
        return {p.name: getattr(self, p.name) for p in get_loss(self.loss).params}

    def loss_label(self) -> str:
        """The loss and its parameters: 'lq q=0.7', 'sce alpha=0.1 beta=1 A=-4', 'cce'."""
        return " ".join([self.loss, *(f"{n}={v:g}" for n, v in self.loss_params().items())])

    def with_loss(self, loss: str, **changes: Any) -> RunSpec:
        """This spec with another loss (and ``changes``), validated. A parameter of this spec's
        loss carries over only where it means the same to the other loss (the registry gives
        both the same ``Param``: q between Lq and truncated Lq, A between SCE and NCE+RCE); the
        others are unset, so the other loss takes its own defaults (an sce grid's beta = 1 must
        not become bootstrapping's beta, nor Lq's q = 0.7 AGCE's q). A value this spec holds for a
        parameter its own loss does not take (set on purpose, for a grid) carries over."""
        fields = self.to_dict()
        try:
            new, old = get_loss(loss), get_loss(self.loss)
        except ValueError:  # an unknown name: parse_spec below refuses it, naming the field
            new = old = None
        if new is not None and new is not old:
            theirs = set(new.params)
            for param in old.params:
                if param not in theirs:  # not the same Param: the new loss's default, or unset
                    fields[param.name] = None if param.name in OTHER_LOSS_PARAMS else param.default
        return parse_spec({**fields, "loss": loss, **changes})

    def label(self) -> str:
        """A short human label: 'lq q=0.7 | uniform 0.4 | seed 0'."""
        noise = "clean" if self.noise == "none" else f"{self.noise} {self.noise_rate:g}"
        if self.noise == "human":
            noise = f"human {self.human_labels}" + (" twin" if self.human_twin else "")
        return f"{self.loss_label()} | {noise} | seed {self.seed}"


def _field_name(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) if loc else "spec"


def parse_spec(data: dict[str, Any] | str | RunSpec) -> RunSpec:
    """Validate a dict or JSON text into a RunSpec; raise SpecError naming each bad field."""
    if isinstance(data, RunSpec):
        return data
    try:
        if isinstance(data, str):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise SpecError([("spec", f"expected a JSON object, got {type(data).__name__}")])
        return RunSpec.model_validate(data)
    except json.JSONDecodeError as exc:
        raise SpecError([("spec", f"not valid JSON: {exc}")]) from None
    except RecursionError:  # JSON (or a dict) nested thousands deep
        raise SpecError([("spec", "nested too deeply to be a run spec")]) from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = clip_quotes(err["msg"].removeprefix("Value error, "))
            if err["type"] == "extra_forbidden":
                msg = "unknown field; see `python -m gce_core train --help` for the allowed ones"
            field = getattr(err.get("ctx", {}).get("error"), "field", None)
            problems.append((clip(field or _field_name(err["loc"])), msg))
        raise SpecError(problems) from None


def load_stored_spec(text: str) -> RunSpec:
    """A spec JSON written earlier (by ``RunSpec.to_json``), read back WITHOUT validation: it was
    valid when written, and a validator changed since must not break a listing of old runs.
    Keys of fields since removed are dropped, fields added since take their defaults, and
    ``lr_milestones`` becomes a tuple again. Raises SpecError if ``text`` is not a JSON object.
    For a spec to train, use ``parse_spec``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([("spec", f"not valid JSON: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError([("spec", f"expected a JSON object, got {type(data).__name__}")])
    known = {name: value for name, value in data.items() if name in RunSpec.model_fields}
    if isinstance(known.get("lr_milestones"), list):
        known["lr_milestones"] = tuple(known["lr_milestones"])
    try:  # q was written as 0.7 for every loss before it became the loss's own parameter
        takes_q = "q" in get_loss(known.get("loss", "lq")).defaults
    except ValueError:
        takes_q = True
    if not takes_q:
        known["q"] = None
    return RunSpec.model_construct(**known)


# --- presets ---------------------------------------------------------------------------
# A preset's schedule (lr milestones, truncated Lq's pruning start and period) is given for its
# own epochs; asked for another run length, from_preset keeps the same fractions of the run.
_PAPER = dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, batch_size=128)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "digits": dict(model="mlp", epochs=60, lr=0.1, batch_size=128, momentum=0.9, weight_decay=0.0,
                       prune_start=40, prune_every=10),
        "mnist5k": dict(model="lenet", epochs=30, lr=0.05, batch_size=128, momentum=0.9, weight_decay=0.0,
                        prune_start=10, prune_every=5),
        # pruning from a third of the run (the paper's CIFAR-10 share), every epoch after
        "fashion_mnist": dict(model="cnn", epochs=8, train_subset=8000, lr=0.05, prune_start=3, prune_every=1),
        "cifar10": dict(model="cnn", epochs=12, train_subset=10000, lr=0.05, augment=True, prune_start=4,
                        prune_every=1),
        "cifar100": dict(model="cnn", epochs=15, train_subset=20000, lr=0.05, augment=True, prune_start=8,
                         prune_every=1),
    },
    # No digits entry: the paper never ran the 8x8 digits, and its lr 0.01 leaves Lq unconverged
    # there (PAPER_DIGITS_NOTE), the opposite of the paper's ordering.
    "paper": {
        "fashion_mnist": dict(_PAPER, model="resnet18", epochs=120, lr_milestones=(40, 80), prune_start=40,
                              prune_every=10),
        "cifar10": dict(_PAPER, model="resnet34", epochs=120, lr_milestones=(40, 80), augment=True, prune_start=40,
                        prune_every=10, open_set_source="cifar100"),
        "cifar100": dict(_PAPER, model="resnet34", epochs=150, lr_milestones=(80, 120), augment=True,
                         prune_start=80, prune_every=10),
    },
}
PRESET_NAMES = tuple(PRESETS)
PAPER_DIGITS_NOTE = (
    "the paper preset is for cifar10, cifar100 and fashion_mnist: the paper never ran the 8x8 digits, and "
    "with its lr 0.01 (11 steps an epoch) Lq does not converge there in 120 epochs (40% uniform noise, seed 0: "
    "Lq 40.0% against CCE 92.2%), the opposite of the paper's ordering; use the quick preset for digits")


def preset_datasets(preset: str) -> tuple[str, ...]:
    """The data sets a preset has fields for."""
    _check_preset(preset)
    return tuple(PRESETS[preset])


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise SpecError([("preset", f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")])


def preset_fields(preset: str, dataset: str, data_root: str | None = None) -> dict[str, Any]:
    """The fields a preset sets for a data set (without validation). SpecError if the preset has
    none for it (the paper preset and digits: PAPER_DIGITS_NOTE). The user's own data sets (looked
    up in ``data_root``) take the quick preset's mnist5k entry, with the mlp for images under 16x16."""
    _check_preset(preset)
    info = dataset_info(dataset, data_root)
    name = info.name
    if name not in DATASETS and preset == "quick":
        fields = dict(PRESETS[preset]["mnist5k"])
        if min(info.image_shape[1:]) < 16:
            fields["model"] = "mlp"
        return {"dataset": name, **fields}
    if name not in PRESETS[preset]:
        why = PAPER_DIGITS_NOTE if (preset, name) == ("paper", "digits") else (
            f"the {preset} preset has no settings for {name}; it has {', '.join(PRESETS[preset])}")
        raise SpecError([("dataset", why)])
    return {"dataset": name, **PRESETS[preset][name]}


def scale_schedule(fields: dict[str, Any], epochs: int) -> dict[str, Any]:
    """``fields`` (a preset's, for its own ``fields["epochs"]``) for a run of ``epochs`` epochs,
    keeping the schedule's fractions of the run: each lr milestone m becomes round(m * epochs /
    E), those outside [1, epochs - 1] and repeats dropped; truncated Lq's prune_start becomes
    round(prune_start * epochs / E), at least 2 (the first w-step needs a trained model; a
    1-epoch truncated Lq run is then refused, saying why); prune_every is scaled likewise, at
    least 1. CIFAR-10's paper schedule
    (120 epochs, milestones 40, 80, pruning from 40 every 10) at 12 epochs: milestones 4, 8,
    pruning from 4 every epoch."""
    out = dict(fields, epochs=epochs)
    old = fields.get("epochs")
    if not old or old == epochs:
        return out
    ratio = epochs / old
    if fields.get("lr_milestones"):
        scaled = sorted({round(m * ratio) for m in fields["lr_milestones"]})
        out["lr_milestones"] = tuple(m for m in scaled if 1 <= m <= epochs - 1)
    if "prune_start" in fields:
        out["prune_start"] = max(2, round(fields["prune_start"] * ratio))
    if "prune_every" in fields:
        out["prune_every"] = max(1, round(fields["prune_every"] * ratio))
    return out


def from_preset(preset: str, dataset: str = "digits", **overrides: Any) -> RunSpec:
    """A validated spec: the preset's fields for ``dataset``, then ``overrides`` on top. An
    ``epochs`` override rescales the preset's lr milestones and pruning schedule to the same
    fractions of the run (``scale_schedule``), unless those fields are overridden too."""
    try:
        fields = preset_fields(preset, dataset, overrides.get("data_root"))
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError([("dataset", str(exc))]) from None
    epochs = overrides.get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1:
        fields = scale_schedule(fields, epochs)
    return parse_spec({**fields, **overrides})
