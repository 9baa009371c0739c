"""Helpers for the app tests: a real store in a temporary folder, runs with synthetic epochs.

The epochs are written through the store's own supervisor-side calls (claim, add_epoch,
complete), so the pages read exactly what a worker would have written.
"""

from __future__ import annotations

import json
import math
import pathlib
import time

from gce_core.loss_zoo import estimation_epochs
from gce_core.metrics import HIST_BINS, summarize
from gce_core.spec import RunSpec
from jobs.client import LabClient


def epoch_rows(spec: RunSpec, epochs: int) -> list[dict]:
    """Plausible epoch rows: CCE memorises late, robust losses do not; every EPOCH_KEYS key."""
    rows = []
    robust = spec.loss != "cce"
    for e in range(1, epochs + 1):
        peak = 0.9 - 0.02 * spec.seed
        test = peak * (1 - math.exp(-e / 2)) - (0 if robust else 0.03 * max(0, e - 3))
        memorised = 0.05 if robust else min(0.9, 0.1 * e)
        truncated = spec.loss == "truncated_lq" and e >= spec.prune_start
        clean = [0] * (HIST_BINS - 5) + [10, 20, 40, 80, 150]
        noisy = [60, 40, 20, 10] + [0] * (HIST_BINS - 4) if robust else [5] * HIST_BINS
        rows.append({
            "epoch": e, "train_loss": 1.0 / e, "train_acc_noisy": 0.6, "train_acc_clean": test,
            "memorised": memorised, "flipped_to_true": 0.5, "val_acc": test - 0.01 * e,
            "test_acc": test, "lr": spec.lr, "seconds": 0.1,
            "kept": 900 if spec.loss == "truncated_lq" else None,
            "prune_precision": 0.8 if truncated else None, "prune_recall": 0.6 if truncated else None,
            "loss_sum_mean": 12.0, "fy_hist_clean": clean, "fy_hist_noisy": noisy,
        })
        if spec.loss == "forward_est" and e == estimation_epochs(spec.epochs, spec.est_share) + 1:
            c = spec.num_classes  # the loss's state adds its estimate to the row of this epoch
            rows[-1]["transition_estimate"] = [[0.7 if i == j else round(0.3 / (c - 1), 4) for j in range(c)]
                                               for i in range(c)]
    return rows


def train_queued(client: LabClient, epochs: int | None = None, *, complete: bool = True) -> list[str]:
    """Play worker: claim every queued run, store its epochs, and complete it (or leave it
    running). Returns the ids in the order claimed."""
    done = []
    while (run := client.store.claim(worker_id="test", host="test", device="cpu", now=time.time())) is not None:
        rows = epoch_rows(run.spec, epochs or run.spec.epochs)
        for row in rows:
            client.store.add_epoch(run.id, run.claim_token, row, now=time.time())
        if complete:
            client.store.complete(run.id, run.claim_token, summarize(rows), now=time.time())
        done.append(run.id)
    return done


def chart_specs(at) -> list[dict]:
    """The plotly figures an AppTest page shows, as dicts."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def assert_titled(fig: dict) -> None:
    layout = fig["layout"]
    assert layout["title"]["text"], "a chart without a title"
    assert layout["xaxis"]["title"]["text"] and layout["yaxis"]["title"]["text"], "an axis without a title"


def values(trace: dict, axis: str = "y") -> list:
    """A trace's x or y as a list (plotly sends numeric arrays as base64 typed arrays)."""
    data = trace.get(axis, [])
    if isinstance(data, dict) and "bdata" in data:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"])).tolist()
    return list(data)


def vega_charts(at) -> list[tuple[dict, dict]]:
    """(spec, {dataset name: DataFrame}) of each Vega-Lite chart an AppTest page shows."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    out = []
    for el in at.get("vega_lite_chart"):
        datasets = {d.name: convert_arrow_bytes_to_pandas_df(d.data.data) for d in el.proto.datasets}
        out.append((json.loads(el.proto.spec), datasets))
    return out


def lab_processes(home: pathlib.Path) -> list[int]:
    """Pids whose environment names this lab home: the launcher, its children and theirs."""
    needle = f"GCE_LAB_HOME={home}".encode()
    pids = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
