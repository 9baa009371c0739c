"""A page's state in the URL's query string, so a link reproduces what the sender saw.

Readers take the query parameters as a mapping (``st.query_params`` or a dict) and never fail:
a missing or malformed value falls back to the default, since links get edited by hand.
Writers return ``dict[str, str]`` with only the values that are not the default, so links stay
short.

| page    | parameters                                                           |
|---------|----------------------------------------------------------------------|
| all     | ``teach=1`` teaching mode                                            |
| Launch  | ``preset``, ``ds`` and the form values that differ from the preset (see ``launch_to_params``) |
| Runs    | ``runs`` (ids, comma-separated), ``metric``, ``status``, ``group``, ``archived`` |
| Compare | ``runs``, ``group``, ``metric``, ``by``, ``smooth``, ``raw``          |
| Theory  | ``c``, ``q`` (list), ``k``, ``rate``, ``run``                         |
| Insight | ``run``, ``epoch``                                                    |
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app import launch_form as lf

Params = Mapping[str, Any]
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _raw(params: Params, key: str) -> str | None:
    value = params.get(key)
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else None
    return None if value is None else str(value).strip()


def get_str(params: Params, key: str, default: str, allowed: Iterable[str] | None = None) -> str:
    value = _raw(params, key)
    if not value or (allowed is not None and value not in set(allowed)):
        return default
    return value


def get_int(params: Params, key: str, default: int | None, lo: int | None = None, hi: int | None = None) -> int | None:
    try:
        value = int(_raw(params, key) or "")
    except ValueError:
        return default
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return default
    return value


def get_float(params: Params, key: str, default: float, lo: float, hi: float) -> float:
    try:
        value = float(_raw(params, key) or "")
    except ValueError:
        return default
    return value if math.isfinite(value) and lo <= value <= hi else default


def get_bool(params: Params, key: str, default: bool = False) -> bool:
    value = _raw(params, key)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes", "on")


def get_list(params: Params, key: str, default: Sequence[str], allowed: Iterable[str]) -> list[str]:
    """Comma-separated values kept in order, unknown ones dropped; the default if none is left."""
    allowed = set(allowed)
    items = [v.strip() for v in (_raw(params, key) or "").split(",")]
    kept = list(dict.fromkeys(v for v in items if v in allowed))
    return kept or list(default)


def get_ids(params: Params, key: str = "runs") -> list[str]:
    """Run ids from 'a1b2c3d4e5f6,0badc0ffee00' (letters, digits, '-' and '_', at most 64
    characters each; in order, duplicates and junk dropped)."""
    ids: list[str] = []
    for part in (_raw(params, key) or "").split(","):
        part = part.strip().lstrip("#")
        if _ID.fullmatch(part) and part not in ids:
            ids.append(part)
    return ids


def get_floats(params: Params, key: str, default: Sequence[float], lo: float, hi: float) -> list[float]:
    out = []
    for part in (_raw(params, key) or "").split(","):
        try:
            v = float(part)
        except ValueError:
            continue
        if math.isfinite(v) and lo <= v <= hi and v not in out:
            out.append(v)
    return out or list(default)


def fmt(value: Any) -> str:
    """One URL value: lists comma-joined, floats with :g, booleans as 1/0."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return "none"
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(fmt(v) for v in value)
    return str(value)


def non_default(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, str]:
    """The values that differ from ``defaults``, formatted for the URL (None values dropped)."""
    return {k: fmt(v) for k, v in values.items() if v is not None and fmt(v) != fmt(defaults.get(k))}


# --- Launch ------------------------------------------------------------------------------------
# Every value of the Launch form (``launch_form.knobs()``: each RunSpec field, each parameter of
# each registry loss as ``<loss>.<param>``, losses, seeds, sweep) has a URL key: its own key, or
# for a few spec fields the short name links have used from the start. A new spec field or loss
# parameter gets its key with no change here.
LAUNCH_SHORT = {
    "dataset": "ds", "noise_rate": "rate", "class_map": "map", "seed": "seed0", "batch_size": "bs",
    "optimizer": "opt", "momentum": "mom", "weight_decay": "wd", "lr_milestones": "ms", "lr_gamma": "gamma",
    "train_subset": "subset", "val_fraction": "val", "augment": "aug", "prune_start": "ps", "prune_every": "pe",
    "sweep_values": "values",
}
# Read only: ``loss`` for ``losses``; a bare parameter name (``q=0.3``, as links had before the
# form knew every loss) sets it for every loss that takes it.
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_NONE = ("", "none", "default")


def launch_url_key(key: str) -> str:
    return LAUNCH_SHORT.get(key, key)


def launch_keys() -> tuple[str, ...]:
    """Every query parameter the Launch page reads."""
    return ("preset", "loss", *(launch_url_key(k) for k in lf.knobs()), *lf.loss_param_names())


def _num(x: float) -> str:
    return fmt(float(x))


def parse_knob(knob: lf.Knob, text: str) -> tuple[Any, str | None]:
    """(value, None) for a good URL value; (value, problem) when it was clamped into range;
    (None, problem) when refused. ``problem`` says what the value must be, in the form's words."""
    must = f"must be in {knob.range_text}" + (f" {knob.why}" if knob.why else "")
    if knob.optional and text.lower() in _NONE:
        return None, None
    if knob.kind in ("int", "float"):
        try:
            value = int(text) if knob.kind == "int" else float(text)
        except ValueError:
            word = "a whole number" if knob.kind == "int" else "a number"
            return None, f"must be {word} in {knob.range_text}"
        if not math.isfinite(value):
            return None, f"must be a finite number in {knob.range_text}"
        if knob.contains(value):
            return value, None
        clamped = knob.clamp(value)
        if clamped is None:
            return None, must
        return (int(clamped) if knob.kind == "int" else clamped), f"{must}; set to {_num(clamped)}"
    if knob.kind == "bool":
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE, None
        return None, "must be 1 (on) or 0 (off)"
    if knob.kind == "choice":
        if text in knob.choices:
            return text, None
        shown = ", ".join(c for c in knob.choices if c)
        return None, f"must be one of {shown}"
    if knob.kind == "multi":
        kept, bad = [], []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            try:
                name = lf.get_loss(part).name if knob.key == "losses" else part
            except ValueError:
                name = None
            if name not in knob.choices:
                bad.append(part)
            elif name not in kept:
                kept.append(name)
        if bad:
            problem = f"has no {', '.join(repr(b) for b in bad)} (it offers {', '.join(knob.choices)})"
            return (tuple(kept) or None), problem + ("; dropped" if kept else "")
        return tuple(kept) or None, None
    if knob.kind in ("ints", "floats"):
        conv = int if knob.kind == "ints" else float
        try:
            items = tuple(conv(p) for p in text.split(",") if p.strip())
        except ValueError:
            example = "40, 80" if knob.kind == "ints" else "0.1, 0.4, 0.7"
            return None, f"must be {'whole numbers' if knob.kind == 'ints' else 'numbers'} separated by commas, like {example}"
        if knob.kind == "floats" and not all(math.isfinite(x) for x in items):
            return None, "must be finite numbers"
        return items, None
    if knob.max_chars is not None and len(text) > knob.max_chars:
        return text[: knob.max_chars], f"must be at most {knob.max_chars} characters; cut there"
    return text, None


def _preset_and_dataset(params: Params) -> tuple[str, str, list[str]]:
    notes = []
    names = lf.preset_names()
    preset, dataset = _raw(params, "preset") or lf.DEFAULT_PRESET, _raw(params, "ds")
    if preset not in names:  # links made before: preset=paper_cifar10 is preset paper on cifar10
        legacy = next((n for n in names if preset.startswith(n + "_") and preset[len(n) + 1:] in lf.DATASETS), None)
        if legacy:
            preset, dataset = legacy, dataset or preset[len(legacy) + 1:]
        else:
            notes.append(f"Link parameter preset={preset[:60]}: Preset must be one of {', '.join(names)}; kept {lf.DEFAULT_PRESET}.")
            preset = lf.DEFAULT_PRESET
    if dataset is not None and dataset not in lf.DATASETS:
        notes.append(f"Link parameter ds={dataset[:60]}: Data set must be one of {', '.join(lf.DATASETS)}; kept {lf.DEFAULT_DATASET}.")
        dataset = None
    return preset, dataset or lf.DEFAULT_DATASET, notes


def launch_from_params(params: Params) -> tuple[str, lf.Values, list[str]]:
    """(preset, form values, notes) from a link: the preset's values for its data set with the
    link's values on top. A value of the wrong type is refused and one out of range is clamped
    into it (or refused when that end of the range is open); each gets a one-line note naming
    the parameter and its range. Never raises."""
    preset, dataset, notes = _preset_and_dataset(params)
    values = lf.defaults(preset, dataset)

    def shown(key: str) -> str:
        value = values[key]
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, tuple):
            return ", ".join(map(fmt, value)) or "none"
        return fmt(value)

    def take(key: str, url: str, knob: lf.Knob, labels: list[str] | None = None) -> str | None:
        """Apply the link's value of ``knob``; its note, or None. With ``labels``, the note is
        left out and its knob's label added there (one note for a bare parameter's losses)."""
        text = _raw(params, url)
        if text is None or (text == "" and not knob.optional):
            return None
        value, problem = parse_knob(knob, text)
        if value is not None or (knob.optional and problem is None):
            values[key] = value
        if not problem:
            return None
        rest = f"{problem}{'' if value is not None else f'; kept {shown(key)}'}."
        if labels is not None:
            labels.append(knob.label)
            return rest
        notes.append(f"Link parameter {url}={text[:60]}: {knob.label} {rest}")
        return rest

    ks = lf.knobs()
    bare = set(lf.loss_param_names())
    for name in bare:  # q=0.3 sets q of every loss taking it (a <loss>.q below wins)
        by_problem: dict[str, list[str]] = {}
        for key, knob in ks.items():
            if key.endswith("." + name):
                labels: list[str] = []
                rest = take(key, name, knob, labels)
                if rest:
                    by_problem.setdefault(rest, []).extend(labels)
        for rest, labels in by_problem.items():
            notes.append(f"Link parameter {name}={_raw(params, name)[:60]}: {' and '.join(labels)} {rest}")
    for key, knob in ks.items():
        if key in ("dataset", "noise_rate") or key in bare:
            continue
        url = launch_url_key(key)
        take(key, "loss" if key == "losses" and _raw(params, url) is None else url, knob)
    # Ranges that depend on other values: the noise rate's top follows the noise kind and the
    # data set; the class maps, the data set's classes.
    rate = lf.knobs(values)["noise_rate"]
    take("noise_rate", launch_url_key("noise_rate"), rate)
    if not rate.contains(values["noise_rate"]):  # the preset's rate, under another noise kind
        values["noise_rate"] = rate.clamp(values["noise_rate"]) or 0.0
    if values.get("class_map") is not None and values["class_map"] not in lf.class_map_choices(dataset):
        notes.append(f"Link parameter map={values['class_map']}: Class map must be one of "
                     f"{', '.join(lf.class_map_choices(dataset))} for {dataset}; kept the data set default.")
        values["class_map"] = None
    return preset, values, notes


def launch_to_params(preset: str, values: Mapping[str, Any]) -> dict[str, str]:
    """``preset``, ``ds`` and the values that differ from the preset's for that data set."""
    dataset = values.get("dataset", lf.DEFAULT_DATASET)
    base = lf.defaults(preset, dataset)
    out = {"preset": preset}
    if dataset != lf.DEFAULT_DATASET:
        out["ds"] = dataset
    for key in lf.knobs():
        if key == "dataset" or key not in values:
            continue
        value = values[key]
        if fmt(value) != fmt(base.get(key)):
            out[launch_url_key(key)] = fmt(value)
    return out
