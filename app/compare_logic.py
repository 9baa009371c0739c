"""The Compare page's logic: group runs, smooth curves, mean ± std over seeds, summary table and
config diff. Plain pandas; the page only renders what these return.

Frames follow ``LabClient.metrics_frame``: one row per (run_id, epoch) with the scalar metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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


def group_labels(specs: Mapping[str, RunSpec], by: str) -> dict[str, str]:
    """Run id -> group label. ``by`` is one of GROUP_BY: "config" pools runs that differ only in
    their seed (label: the differing fields), "loss" by loss and its q, k, "q" by q (CCE and MAE
    by name), "noise_rate" by noise kind and rate, "run" one group per run."""
    if by not in GROUP_BY:
        raise ValueError(f"unknown grouping {by!r}; allowed: {', '.join(GROUP_BY)}")
    if by == "run":
        return {i: f"#{i} {s.label()}" for i, s in specs.items()}
    if by == "loss":
        return {i: _loss_label(s) for i, s in specs.items()}
    if by == "q":
        return {i: f"q={s.q:g}" if "q" in s.loss_params() else _loss_label(s) for i, s in specs.items()}
    if by == "noise_rate":
        return {i: _noise_label(s) for i, s in specs.items()}
    varying = [c for c in config_diff(specs).columns if c != "seed"]
    of_loss = {"loss", "q", "k", *OTHER_LOSS_PARAMS}  # shown inside the loss's label
    labels = {}
    for i, s in specs.items():
        parts = [_loss_label(s)] if of_loss & set(varying) else []
        if {"noise", "noise_rate"} & set(varying):
            parts.append(_noise_label(s))
        d = s.to_dict()
        parts += [f"{c}={d[c]}" for c in varying if c not in of_loss | {"noise", "noise_rate"}]
        labels[i] = " | ".join(parts) or s.label().rsplit(" | seed", 1)[0]
    return labels


def group_losses(specs: Mapping[str, RunSpec], groups: Mapping[str, str]) -> dict[str, str]:
    """Group label -> its loss, for the groups whose runs all share one loss and whose loss no
    other group has (so colour can follow the loss: CCE red, MAE grey, ...)."""
    losses: dict[str, set[str]] = {}
    for run_id, group in groups.items():
        losses.setdefault(group, set()).add(specs[run_id].loss)
    single = {g: next(iter(ls)) for g, ls in losses.items() if len(ls) == 1}
    counts: dict[str, int] = {}
    for loss in single.values():
        counts[loss] = counts.get(loss, 0) + 1
    return {g: loss for g, loss in single.items() if counts[loss] == 1}


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
    frame: pd.DataFrame, metric: str, groups: Mapping[str, str], smoothing: float = 0.0
) -> pd.DataFrame:
    """group, run_id, epoch, value (smoothed per run) for the runs in ``groups``, in its order."""
    cols = ["group", "run_id", "epoch", "value"]
    if frame.empty or metric not in frame:
        return pd.DataFrame(columns=cols)
    parts = []
    by_run = dict(tuple(frame.groupby("run_id")))
    for run_id in groups:  # in the groups' order, so the legend reads in that order
        if run_id not in by_run:
            continue
        rows = by_run[run_id].sort_values("epoch")
        parts.append(pd.DataFrame({
            "group": groups[run_id], "run_id": run_id, "epoch": rows["epoch"].to_numpy(),
            "value": ema(rows[metric], smoothing),
        }))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def aggregate(values: pd.DataFrame) -> pd.DataFrame:
    """Per (group, epoch): mean, std (sample std, NaN for one run) and n over runs, in the
    order the groups first appear. ``values`` comes from :func:`per_run_values`."""
    if values.empty:
        return pd.DataFrame(columns=["group", "epoch", "mean", "std", "n"])
    order = {g: i for i, g in enumerate(dict.fromkeys(values["group"]))}
    out = values.groupby(["group", "epoch"], sort=False)["value"].agg(["mean", "std", "count"])
    out = out.rename(columns={"count": "n"}).reset_index()
    out["_order"] = out["group"].map(order)
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


def summary_table(frame: pd.DataFrame, groups: Mapping[str, str]) -> pd.DataFrame:
    """One row per group: runs, epochs (min over runs), and mean / std in percent of the test
    accuracy at the best validation epoch (the paper's number), at the last epoch, and the best."""
    summaries = run_summaries(frame)
    rows = []
    for group in dict.fromkeys(groups.values()):
        ids = [i for i, g in groups.items() if g == group and i in summaries]
        if not ids:
            continue
        row: dict[str, Any] = {"group": group, "runs": len(ids), "epochs": min(summaries[i]["epochs"] for i in ids)}
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
    out = table[["group", "runs", "epochs"]].copy()
    for key, title in SUMMARY_COLUMNS.items():
        mean, std = table[f"{key}_mean"], table[f"{key}_std"]
        out[title] = [f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}" for m, s in zip(mean, std, strict=True)]
    return out
