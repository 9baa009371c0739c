"""A page's state in the URL's query string, so a link reproduces what the sender saw.

Readers take the query parameters as a mapping (``st.query_params`` or a dict) and never fail:
a missing or malformed value falls back to the default, since links get edited by hand.
Writers return ``dict[str, str]`` with only the values that are not the default, so links stay
short.

| page    | parameters                                                           |
|---------|----------------------------------------------------------------------|
| all     | ``teach=1`` teaching mode                                            |
| Launch  | ``preset`` and the form fields that differ from it (see LAUNCH_PARAMS) |
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

from app.launch_form import DEFAULT_PRESET, PRESETS, LaunchChoices, choices_from_preset, with_values

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
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(fmt(v) for v in value)
    return str(value)


def non_default(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, str]:
    """The values that differ from ``defaults``, formatted for the URL (None values dropped)."""
    return {k: fmt(v) for k, v in values.items() if v is not None and fmt(v) != fmt(defaults.get(k))}


# --- Launch ------------------------------------------------------------------------------------
# URL key -> (LaunchChoices field, kind)
LAUNCH_PARAMS: dict[str, tuple[str, str]] = {
    "ds": ("dataset", "str"), "model": ("model", "str"), "noise": ("noise", "str"),
    "rate": ("noise_rate", "float"), "map": ("class_map", "str"), "losses": ("losses", "list"),
    "q": ("q", "float"), "k": ("k", "float"), "epochs": ("epochs", "int"), "seeds": ("seeds", "int"),
    "seed0": ("first_seed", "int"), "lr": ("lr", "float"), "bs": ("batch_size", "int"),
    "opt": ("optimizer", "str"), "mom": ("momentum", "float"), "wd": ("weight_decay", "float"),
    "ms": ("lr_milestones", "ints"), "gamma": ("lr_gamma", "float"), "subset": ("train_subset", "int"),
    "val": ("val_fraction", "float"), "aug": ("augment", "bool"), "ps": ("prune_start", "int"),
    "pe": ("prune_every", "int"), "compile": ("compile", "bool"),
}


def _parse(kind: str, text: str) -> Any:
    if kind == "float":
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if kind == "int":
        return int(text)
    if kind == "bool":
        return text.lower() in ("1", "true", "yes", "on")
    if kind == "list":
        return tuple(v.strip() for v in text.split(",") if v.strip())
    if kind == "ints":
        return tuple(int(v) for v in text.split(",") if v.strip())
    return text


def launch_from_params(params: Params) -> tuple[str, LaunchChoices]:
    """(preset key, form choices): the preset's values with the URL's fields on top. Values of
    the wrong type are ignored; values of the right type are kept even when out of range, so
    the form shows them with the spec's own message."""
    preset = get_str(params, "preset", DEFAULT_PRESET, PRESETS)
    choices = choices_from_preset(preset)
    updates = {}
    for key, (field, kind) in LAUNCH_PARAMS.items():
        text = _raw(params, key)
        if text is None or text == "":
            continue
        try:
            updates[field] = _parse(kind, text)
        except ValueError:
            continue
    return preset, with_values(choices, **updates)


def launch_to_params(preset: str, choices: LaunchChoices) -> dict[str, str]:
    """``preset`` plus the fields that differ from it."""
    base = choices_from_preset(preset)
    out = {"preset": preset}
    for key, (field, _kind) in LAUNCH_PARAMS.items():
        value, default = getattr(choices, field), getattr(base, field)
        if value is not None and fmt(value) != fmt(default):
            out[key] = fmt(value)
    return out
