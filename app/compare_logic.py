"""The Compare page's logic: group runs, smooth curves, mean ± std over seeds, summary table and
config diff. Plain pandas; the page only renders what these return.

Frames follow ``LabClient.metrics_frame``: one row per (run_id, epoch) with the scalar metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gce_core.losses import LOSS_NAMES, get_loss
from gce_core.metrics import summarize
from gce_core.spec import OTHER_LOSS_PARAMS, RunSpec

GROUP_BY = {
    "config": "configuration (seeds pooled)",
    "loss": "loss (with its q, k)",
    "q": "q",
    "noise_rate": "noise rate",
    "run": "nothing (one line per run)",
}
IGNORED_IN_DIFF = ("name",)


def _loss_label(spec: RunSpec) -> str:
    """The loss's short label from the registry and its parameters: 'Lq q=0.7', 'CCE'."""
    params = (f"{name}={value:g}" for name, value in spec.loss_params().items())
    return " ".join([get_loss(spec.loss).short_label, *params])


def _noise_label(spec: RunSpec) -> str:
    return "clean" if spec.noise == "none" else f"{spec.noise} {spec.noise_rate:g}"


def ordered(specs: Mapping[str, RunSpec]) -> dict[str, RunSpec]:
    """The runs in a stable reading order: loss (the registry's order), its parameters, noise, seed."""
    order = {name: i for i, name in enumerate(LOSS_NAMES)}

    def key(item: tuple[str, RunSpec]):
        run_id, s = item
        return (order[s.loss], tuple(s.loss_params().values()), s.noise, s.noise_rate, s.dataset, s.model,
                s.seed, run_id)

    return dict(sorted(specs.items(), key=key))


def config_diff(specs: Mapping[str, RunSpec]) -> pd.DataFrame:
    """Fields that differ between the runs: index run id, one column per differing field (name
    left out). Empty columns when all runs share one configuration."""
    rows = {run_id: spec.to_dict() for run_id, spec in specs.items()}
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame.from_dict(rows, orient="index").drop(columns=list(IGNORED_IN_DIFF), errors="ignore")
    frame = frame.map(lambda v: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
    varying = [c for c in frame.columns if frame[c].astype(str).nunique() > 1]
    out = frame[varying]
    out.index.name = "run"
    return out.loc[list(ordered(specs))]


def shared_config(specs: Mapping[str, RunSpec]) -> dict[str, Any]:
    """Fields (name left out) that every run shares, with their value."""
    diff = config_diff(specs)
    if not specs:
        return {}
    first = next(iter(specs.values())).to_dict()
    return {k: v for k, v in first.items() if k not in diff.columns and k not in IGNORED_IN_DIFF}


LOSS_FIELDS = frozenset({"loss", "q", "k", *OTHER_LOSS_PARAMS})
NOISE_FIELDS = frozenset({"noise", "noise_rate", "class_map", "open_set_source"})
BY_FIELDS = {  # the fields a grouping names in its labels
    "config": frozenset(),
    "loss": LOSS_FIELDS,
    "q": frozenset({"q"}),
    "noise_rate": NOISE_FIELDS,
}
FIELD_WORDS = {"dataset": "data set", "noise_rate": "noise rate", "train_subset": "training subset",
               "val_fraction": "validation share", "batch_size": "batch size", "lr": "learning rate",
               "weight_decay": "weight decay", "lr_milestones": "lr milestones", "lr_gamma": "lr gamma",
               "prune_start": "prune start", "prune_every": "prune every"}


def varying_fields(specs: Mapping[str, RunSpec]) -> list[str]:
    """The spec fields (seed and name left out) whose value differs between the runs."""
    return [c for c in config_diff(specs).columns if c != "seed"]


@dataclass(frozen=True)
class Grouping:
    """How a selection is drawn. ``groups``: run id -> line label; ``panels``: run id -> panel
    title (all "" for one panel); ``kept_apart``: fields the grouping does not name but the runs
    differ in, so they are named in the labels too (never pooled); ``panel_field``: what the
    panels split by ("" for none)."""

    groups: dict[str, str]
    panels: dict[str, str]
    kept_apart: tuple[str, ...]
    panel_field: str

    def note(self, by: str) -> str:
        """One sentence saying what the view did with settings the grouping does not name."""
        parts = []
        if self.panel_field:
            parts.append("the runs have different noise settings: one panel per noise setting")
        if self.kept_apart:
            words = ", ".join(FIELD_WORDS.get(f, f) for f in self.kept_apart)
            parts.append(f"they also differ in {words}, so runs are pooled only where those match too (named in the legend)")
        if not parts:
            return ""
        return f"Grouped by {GROUP_BY[by]}: " + "; ".join(parts) + "."


def grouping(specs: Mapping[str, RunSpec], by: str) -> Grouping:
    """Lines and panels for ``specs`` grouped ``by`` (one of GROUP_BY). A line pools only runs that
    differ in nothing but their seed: settings the grouping does not name are added to its label
    ("kept apart"), and different noise settings (unless grouped by noise rate) become panels."""
    if by not in GROUP_BY:
        raise ValueError(f"unknown grouping {by!r}; allowed: {', '.join(GROUP_BY)}")
    if by == "run":
        return Grouping({i: f"{_loss_label(s)} | {_noise_label(s)} | seed {s.seed}" + (f" | {s.name}" if s.name else "") + f" · #{i[:6]}"
                         for i, s in specs.items()}, dict.fromkeys(specs, ""), (), "")
    varying = varying_fields(specs)
    panel = by != "noise_rate" and bool(NOISE_FIELDS & set(varying))
    named = set(BY_FIELDS[by]) if by != "config" else set(varying)
    if panel:
        named |= NOISE_FIELDS
    rest = [f for f in varying if f not in named]
    loss_part = by == "loss" or bool((LOSS_FIELDS - ({"q"} if by == "q" else set())) & set(varying))
    groups, panels = {}, {}
    for i, s in specs.items():
        d = s.to_dict()
        parts = [_loss_label(s)] if loss_part else []
        if by == "q" and not loss_part:
            parts.append(f"q={s.q:g}" if "q" in s.loss_params() else _loss_label(s))
        if by == "noise_rate":
            parts.append(_noise_label(s))
        parts += [f"{FIELD_WORDS.get(c, c)}={_value(d[c])}" for c in varying
                  if c not in LOSS_FIELDS | NOISE_FIELDS and (c in rest or by == "config")]
        groups[i] = " | ".join(parts) or _loss_label(s)  # nothing varies: the chart's subtitle names the rest
        panels[i] = _noise_label(s) if panel else ""
    return Grouping(groups, panels, tuple(rest), "noise" if panel else "")


def _value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v))
    return f"{v:g}" if isinstance(v, float) else str(v)


def group_labels(specs: Mapping[str, RunSpec], by: str) -> dict[str, str]:
    """Run id -> line label (see :func:`grouping`)."""
    return grouping(specs, by).groups


def group_losses(specs: Mapping[str, RunSpec], groups: Mapping[str, str]) -> dict[str, str]:
    """Group label -> the loss of its runs (a line pools runs of one loss only; with "one line
    per run" too)."""
    return {group: specs[run_id].loss for run_id, group in groups.items()}


def group_order(specs: Mapping[str, RunSpec], groups: Mapping[str, str]) -> dict[str, float]:
    """Group label -> a value that orders the lines of one loss (q, then k, then noise rate), for
    the ordered shades of its colour."""
    out = {}
    for run_id, group in groups.items():
        s = specs[run_id]
        out.setdefault(group, (s.q or 0.0) * 100 + (s.k or 0.0) * 10 + s.noise_rate)  # q, k: None for losses without them
    return out


def describe(specs: Sequence[RunSpec]) -> str:
    """What a set of runs is, by configuration: 'digits · mlp · 40 epochs · uniform 0.4 · CCE, MAE,
    Lq q=0.7 · seeds 0-1'. Fields that vary are summarised ('noise rate 0.2-0.6', '3 data sets')."""
    if not specs:
        return "no runs"

    def one_or_range(values, fmt, many):
        vals = sorted(set(values))
        if len(vals) == 1:
            return fmt(vals[0])
        if all(isinstance(v, (int, float)) for v in vals):
            return f"{many} {vals[0]:g}-{vals[-1]:g}"
        return f"{len(vals)} {many}s"

    parts = [
        one_or_range([s.dataset for s in specs], str, "data set"),
        one_or_range([s.model for s in specs], str, "model"),
        one_or_range([s.epochs for s in specs], lambda e: f"{e} epochs", "epochs"),
    ]
    noises = sorted({_noise_label(s) for s in specs})
    rates = sorted({s.noise_rate for s in specs})
    kinds = sorted({s.noise for s in specs})
    if len(noises) == 1:
        parts.append(noises[0])
    elif len(kinds) == 1:
        parts.append(f"{kinds[0]} {rates[0]:g}-{rates[-1]:g}")
    else:
        parts.append(f"{len(noises)} noise settings")
    by_loss: dict[str, list[RunSpec]] = {}
    for s in sorted(specs, key=lambda s: (LOSS_NAMES.index(s.loss), s.q or 0.0, s.k or 0.0)):
        by_loss.setdefault(s.loss, []).append(s)
    losses = []
    for of_loss in by_loss.values():
        labels = list(dict.fromkeys(_loss_label(s) for s in of_loss))
        others = {tuple((n, v) for n, v in s.loss_params().items() if n != "q") for s in of_loss}
        if len(labels) > 1 and len(others) == 1:
            qs = sorted({s.q for s in of_loss})  # one loss swept over q: 'Lq q=0.2-0.8'
            labels = [_loss_label(of_loss[0]).replace(f"q={of_loss[0].q:g}", f"q={qs[0]:g}-{qs[-1]:g}")]
        losses += labels
    parts.append(", ".join(losses) if len(losses) <= 4 else f"{len(losses)} losses")
    seeds = sorted({s.seed for s in specs})
    parts.append(f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds")
    return " · ".join(parts)


def group_title(name: str, specs: Sequence[RunSpec]) -> str:
    """A group as pickers show it: its configuration first, then its name (the stored name is
    kept so the two can be matched; a generated 'group-2025...' name is only the time)."""
    return f"{describe(specs)} — {name}"


def ema(values: pd.Series | np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard's smoothing); weight in [0, 1), 0 = raw.
    NaN entries stay NaN and do not move the average."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    x = np.asarray(values, dtype=float)
    out = np.full_like(x, np.nan)
    avg, seen = 0.0, 0
    for i, v in enumerate(x):
        if math.isnan(v):
            continue
        seen += 1
        avg = weight * avg + (1 - weight) * v
        out[i] = avg / (1 - weight**seen) if weight > 0 else v
    return out


def per_run_values(
    frame: pd.DataFrame, metric: str, groups: Mapping[str, str], smoothing: float = 0.0,
    panels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """panel, group, run_id, epoch, value (smoothed per run) for the runs in ``groups``, in its
    order; panel is "" without ``panels``."""
    cols = ["panel", "group", "run_id", "epoch", "value"]
    if frame.empty or metric not in frame:
        return pd.DataFrame(columns=cols)
    parts = []
    by_run = dict(tuple(frame.groupby("run_id")))
    for run_id in groups:  # in the groups' order, so the legend reads in that order
        if run_id not in by_run:
            continue
        rows = by_run[run_id].sort_values("epoch")
        parts.append(pd.DataFrame({
            "panel": (panels or {}).get(run_id, ""), "group": groups[run_id], "run_id": run_id,
            "epoch": rows["epoch"].to_numpy(), "value": ema(rows[metric], smoothing),
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def aggregate(values: pd.DataFrame) -> pd.DataFrame:
    """Per (panel, group, epoch): mean, std (sample std, NaN for one run) and n over runs, in the
    order the groups first appear. ``values`` comes from :func:`per_run_values`."""
    if values.empty:
        return pd.DataFrame(columns=["panel", "group", "epoch", "mean", "std", "n"])
    if "panel" not in values:
        values = values.assign(panel="")
    order = {g: i for i, g in enumerate(dict.fromkeys(zip(values["panel"], values["group"], strict=True)))}
    out = values.groupby(["panel", "group", "epoch"], sort=False)["value"].agg(["mean", "std", "count"])
    out = out.rename(columns={"count": "n"}).reset_index()
    out["_order"] = [order[k] for k in zip(out["panel"], out["group"], strict=True)]
    return out.sort_values(["_order", "epoch"]).drop(columns="_order").reset_index(drop=True)


def run_summaries(frame: pd.DataFrame) -> dict[str, dict]:
    """Run id -> gce_core.metrics.summarize of its epoch rows (partial for running runs)."""
    out = {}
    if frame.empty:
        return out
    for run_id, rows in frame.groupby("run_id"):
        history = rows.sort_values("epoch")[["epoch", "val_acc", "test_acc"]].to_dict("records")
        out[run_id] = {**summarize(history), "epochs": int(rows["epoch"].max())}
    return out


SUMMARY_COLUMNS = {
    "test_acc_at_best_val": "test acc @ best val (%)",
    "last_test_acc": "last test acc (%)",
    "best_test_acc": "best test acc (%)",
}


def summary_table(frame: pd.DataFrame, groups: Mapping[str, str], panels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per (panel, group): runs, epochs (min over runs), and mean / std in percent of the
    test accuracy at the best validation epoch (the paper's number), at the last epoch, and the
    best. A 'noise' column first when ``panels`` split the runs."""
    summaries = run_summaries(frame)
    panels = panels or {}
    split = len(set(panels.values())) > 1
    rows = []
    panel_order = {p: n for n, p in enumerate(dict.fromkeys(panels.get(i, "") for i in groups))}
    group_order = {g: n for n, g in enumerate(dict.fromkeys(groups.values()))}
    keys = sorted(dict.fromkeys((panels.get(i, ""), g) for i, g in groups.items()), key=lambda k: (panel_order[k[0]], group_order[k[1]]))
    for panel, group in keys:
        ids = [i for i, g in groups.items() if g == group and panels.get(i, "") == panel and i in summaries]
        if not ids:
            continue
        row: dict[str, Any] = {"noise": panel} if split else {}
        row.update({"group": group, "runs": len(ids), "epochs": min(summaries[i]["epochs"] for i in ids)})
        for key in SUMMARY_COLUMNS:
            vals = np.array([summaries[i][key] for i in ids], dtype=float) * 100
            row[f"{key}_mean"] = float(vals.mean())
            row[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def format_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The summary table for display: 'mean ± std' strings with two decimals."""
    if table.empty:
        return table
    out = table[[c for c in ("noise", "group", "runs", "epochs") if c in table]].copy()
    for key, title in SUMMARY_COLUMNS.items():
        mean, std = table[f"{key}_mean"], table[f"{key}_std"]
        out[title] = [f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}" for m, s in zip(mean, std, strict=True)]
    return out


# --- sweeps ------------------------------------------------------------------------------------
SWEEP_PARAMS = {"q": "q", "noise_rate": "noise rate", "k": "k"}
SWEEP_METRICS = {"test_acc_at_best_val": "test accuracy at the best noisy-validation epoch",
                 "last_test_acc": "test accuracy at the last epoch"}


def _takes(spec: RunSpec, param: str) -> bool:
    return param == "noise_rate" or param in spec.loss_params()


def swept_params(specs: Mapping[str, RunSpec]) -> list[str]:
    """The parameters of SWEEP_PARAMS that take several values among the runs that use them
    (q among the Lq runs, not CCE's unused q), in SWEEP_PARAMS order."""
    out = []
    for param in SWEEP_PARAMS:
        values = {getattr(s, param) for s in specs.values() if _takes(s, param)}
        if len(values) > 1:
            out.append(param)
    return out


def sweep_table(specs: Mapping[str, RunSpec], summaries: Mapping[str, dict], param: str, key: str) -> pd.DataFrame:
    """line, loss, x, mean, std, n of ``key`` (of SWEEP_METRICS, in percent) per (line, value of
    ``param``). A line is a loss (with its parameters other than ``param``) plus any other setting
    the runs differ in, so runs are pooled over seeds only; x is NaN for a loss that does not
    take ``param`` (CCE in a q sweep). Runs without a summary (no epoch yet) are left out."""
    if param not in SWEEP_PARAMS:
        raise ValueError(f"unknown sweep parameter {param!r}; allowed: {', '.join(SWEEP_PARAMS)}")
    other = [f for f in varying_fields(specs) if f not in LOSS_FIELDS | {param}]
    if param == "noise_rate":
        other = [f for f in other if f != "noise"]
    rows = []
    for run_id, s in ordered(specs).items():
        if run_id not in summaries or summaries[run_id].get(key) is None:
            continue
        params = {n: v for n, v in s.loss_params().items() if n != param}
        label = " ".join([get_loss(s.loss).short_label, *(f"{n}={v:g}" for n, v in params.items())])
        d = s.to_dict()
        label = " | ".join([label, *(f"{FIELD_WORDS.get(f, f)}={_value(d[f])}" for f in other)])
        x = float(getattr(s, param)) if _takes(s, param) else math.nan
        rows.append({"line": label, "loss": s.loss, "x": x, "value": 100 * float(summaries[run_id][key])})
    if not rows:
        return pd.DataFrame(columns=["line", "loss", "x", "mean", "std", "n"])
    frame = pd.DataFrame(rows)
    out = frame.groupby(["line", "loss", "x"], sort=False, dropna=False)["value"].agg(["mean", "std", "count"])
    return out.rename(columns={"count": "n"}).reset_index()


def sweep_bound(specs: Mapping[str, RunSpec], param: str, xs: Sequence[float]) -> tuple[pd.DataFrame, str]:
    """The Theory page's excess-risk bound A = η (c^(1-q) - 1) / (q (c - 1)) of Lq under uniform
    noise, against ``param`` over ``xs``, where it applies: a q sweep at one uniform rate, or a
    noise-rate sweep of Lq runs at one q; one data set. (frame x, value, line; axis title), or an
    empty frame and the reason it does not apply."""
    from gce_core.bounds import excess_risk_bound

    empty = pd.DataFrame(columns=["x", "value", "line"])
    runs = list(specs.values())
    if {s.noise for s in runs} != {"uniform"}:
        return empty, "the bound is for uniform noise only"
    if len({s.dataset for s in runs}) != 1:
        return empty, "the runs are on several data sets (c differs)"
    c = runs[0].num_classes
    lq = [s for s in runs if get_loss(s.loss).risk_bound is not None]  # the losses the theorem is about
    if param == "q":
        rates = {s.noise_rate for s in runs}
        if len(rates) != 1:
            return empty, "the runs have several noise rates"
        rate = rates.pop()
        grid = np.linspace(max(0.05, min(xs)), max(xs), 60) if xs else []
        vals = [excess_risk_bound(c, q, rate) if rate < 1 - 1 / c else math.nan for q in grid]
        return pd.DataFrame({"x": grid, "value": vals, "line": f"bound A(q) at η={rate:g}, c={c}"}), "excess-risk bound A (right axis)"
    if param == "noise_rate":
        qs = {s.q for s in lq}
        if len(qs) != 1:
            return empty, "the bound needs Lq runs at one q"
        q = qs.pop()
        grid = [r for r in np.linspace(0.0, max(xs), 60) if r < 1 - 1 / c] if xs else []
        return (pd.DataFrame({"x": grid, "value": [excess_risk_bound(c, q, r) for r in grid], "line": f"bound A(η) at q={q:g}, c={c}"}),
                "excess-risk bound A (right axis)")
    return empty, "no bound depends on k alone"


# --- filters and export ------------------------------------------------------------------------
FILTER_FIELDS = ("loss", "q", "k", "noise", "noise_rate", "dataset", "model", "epochs", "seed")


def filter_options(records: Sequence, *, varying_only: bool = True) -> dict[str, list]:
    """Spec field -> its distinct values among ``records`` (with ``varying_only``, fields with
    more than one value only; FILTER_FIELDS first, then every other spec field), plus 'status'
    and 'tag'."""
    values: dict[str, set] = {}
    for r in records:
        for k, v in r.spec.to_dict().items():
            if k == "name":
                continue
            values.setdefault(k, set()).add(_value(v) if isinstance(v, (list, tuple)) else v)
        values.setdefault("status", set()).add(str(r.status))
        for t in r.tags or ():
            values.setdefault("tag", set()).add(t)
    order = [*FILTER_FIELDS, "status", "tag", *sorted(values)]
    out = {}
    for k in dict.fromkeys(order):
        vals = values.get(k, set())
        if len(vals) > 1 or (vals and (k == "tag" or not varying_only)):
            out[k] = sorted(vals, key=lambda v: (v is None, str(type(v)), v if v is not None else 0))
    return out


def apply_filters(records: Sequence, chosen: Mapping[str, Sequence]) -> list:
    """The records whose every filtered field has one of the chosen values (an empty choice
    filters nothing); 'tag' keeps runs with any of the chosen tags."""
    out = []
    for r in records:
        d = r.spec.to_dict()
        ok = True
        for field, allowed in chosen.items():
            if not allowed:
                continue
            if field == "status":
                ok = str(r.status) in {str(a) for a in allowed}
            elif field == "tag":
                ok = bool(set(r.tags or ()) & set(allowed))
            else:
                v = d.get(field)
                ok = (_value(v) if isinstance(v, (list, tuple)) else v) in set(allowed)
            if not ok:
                break
        if ok:
            out.append(r)
    return out


def showing(shown: int, total: int) -> str:
    """'showing 12 of 40 runs' (or 'all 40 runs')."""
    return f"all {total} runs" if shown == total else f"showing {shown} of {total} runs"


def wide_csv(records: Sequence, frame: pd.DataFrame) -> str:
    """One row per (run, epoch): run_id, status, group, tags, one column per spec field, then every
    scalar metric (one named like a spec field gets 'epoch_': epoch_lr, the learning rate of that
    epoch). ``frame`` is LabClient.metrics_frame of the same runs."""
    spec_cols = list(RunSpec.model_fields)
    runs = []
    for r in records:
        d = {k: (_value(v) if isinstance(v, (list, tuple)) else v) for k, v in r.spec.to_dict().items()}
        runs.append({"run_id": r.id, "status": str(r.status), "group": r.group or "", "tags": ",".join(r.tags or ()),
                     **{c: d.get(c) for c in spec_cols}})
    meta = pd.DataFrame(runs, columns=["run_id", "status", "group", "tags", *spec_cols])
    if frame.empty:
        return meta.to_csv(index=False)
    metrics = [c for c in frame.columns if c not in ("name", "group", "loss", "q", "noise", "noise_rate", "seed", "dataset")]
    # a metric named like a spec field (the epoch's lr) says so: 'epoch_lr'
    renamed = {c: f"epoch_{c}" for c in metrics if c in spec_cols}
    out = meta.merge(frame[metrics].rename(columns=renamed), on="run_id", how="left")
    return out.to_csv(index=False)
