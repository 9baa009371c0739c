"""The Runs page's logic: the runs table, ETAs, what a selection allows. Works on ``RunRecord``s
from ``jobs.client``; no Streamlit here.

User text (run names, tags, groups) goes into dataframe cells, which the browser renders as
text, never as HTML or Markdown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

import pandas as pd

from jobs.status import RunStatus

STATUS_ICONS = {
    RunStatus.QUEUED: "○ queued",
    RunStatus.RUNNING: "▶ running",
    RunStatus.COMPLETED: "✔ completed",
    RunStatus.FAILED: "✖ failed",
    RunStatus.CANCELLED: "■ cancelled",
    RunStatus.INTERRUPTED: "↻ interrupted",
}
TABLE_COLUMNS = ("id", "run", "status", "progress", "epochs", "ETA", "device", "test acc @ best val (%)", "group", "tags", "created")


def format_eta(seconds: float | None) -> str:
    """'-' when unknown, else '8 s', '3 min 05 s', '2 h 10 min'."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _when(value: datetime | float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def run_text(spec) -> str:
    """'my name · lq q=0.7 | uniform 0.4 | seed 0': a name never hides the loss, q or seed."""
    return f"{spec.name} · {spec.label()}" if spec.name else spec.label()


def run_label(record) -> str:
    """'lq q=0.7 | uniform 0.4 | seed 0 (#a1b2c3)', the name (if any) first."""
    return f"{run_text(record.spec)} (#{record.id[:6]})"


def run_colors(records: Sequence, labels: dict[str, str]) -> dict[str, str]:
    """Label -> colour: each run in its loss's colour (CCE red, MAE grey, Lq blue, truncated Lq
    green), lighter for each further run of the same loss."""
    from app.charts import loss_color, shade

    seen: dict[str, int] = {}
    out = {}
    for r in records:
        n = seen.get(r.spec.loss, 0)
        seen[r.spec.loss] = n + 1
        out[labels[r.id]] = shade(loss_color(r.spec.loss), n)
    return out


def status_signature(records: Iterable) -> tuple:
    """What the action buttons depend on: each run's id, status and archived flag."""
    return tuple(sorted((r.id, str(r.status), bool(r.archived)) for r in records))


def status_text(r) -> str:
    """The status column: the status, flagged when a completed run ended at chance level and when
    a queued run waits out a storage fault (jobs/storage.py)."""
    status = RunStatus(r.status)
    text = STATUS_ICONS[status]
    if status == RunStatus.COMPLETED and getattr(r, "at_chance", False):
        return text + " ⚠ at chance"
    if status == RunStatus.QUEUED and getattr(r, "not_before", None) is not None and getattr(r, "storage_faults", 0):
        return text + " ⏸ storage fault"
    return text


def runs_table(records: Sequence, selected: Iterable[str] = ()) -> pd.DataFrame:
    """One row per run with TABLE_COLUMNS plus a 'selected' flag column (first)."""
    chosen = set(selected)
    rows = []
    for r in records:
        summary = r.summary or {}
        best = summary.get("test_acc_at_best_val")
        status = RunStatus(r.status)
        rows.append({
            "selected": r.id in chosen,
            "id": r.id,
            "run": run_text(r.spec),
            "status": status_text(r),
            "progress": float(r.progress or 0.0),
            "epochs": f"{r.epochs_done}/{r.spec.epochs}",
            "ETA": format_eta(r.eta_seconds) if status in (RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.INTERRUPTED) else "",
            "device": r.device or "",
            "test acc @ best val (%)": "–" if best is None else f"{100 * best:.2f}",
            "group": r.group or "",
            "tags": ", ".join(r.tags or ()),
            "created": _when(r.created_at),
        })
    return pd.DataFrame(rows, columns=["selected", *TABLE_COLUMNS])


def any_active(records: Iterable) -> bool:
    """True while some run is queued, running or interrupted (it will still change)."""
    return any(not RunStatus(r.status).is_final for r in records)


def cancellable(records: Iterable) -> list[str]:
    """Ids of the runs a cancel would affect (those not final yet)."""
    return [r.id for r in records if not RunStatus(r.status).is_final]


def deletable(records: Iterable) -> tuple[list[str], list[str]]:
    """(ids that may be deleted now: final runs, ids that must be cancelled first)."""
    ok, busy = [], []
    for r in records:
        (ok if RunStatus(r.status).is_final else busy).append(r.id)
    return ok, busy


def parse_tags(text: str) -> list[str]:
    """'paper, baseline ,, x' -> ['paper', 'baseline', 'x'] (trimmed, at most 40 characters each,
    duplicates dropped)."""
    tags = [t.strip()[:40] for t in text.split(",")]
    return list(dict.fromkeys(t for t in tags if t))


# --- why a run failed ---------------------------------------------------------------------------
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit|NotFound\w*)): ?(.*)$")
_ADVICE = (  # (pattern in the error text, what to do); the first that matches wins
    (re.compile(r"DatasetNotFound|No such file|FileNotFoundError|not found in", re.I),
     "The data set's files are not in the data folder. Put them there (see docs/library.md, "
     "\"Data sets\"), or launch on the embedded digits, then launch again."),
    (re.compile(r"out of memory|CUDA error: out of memory|OutOfMemoryError", re.I),
     "The device ran out of memory. Launch again with a smaller batch size, a smaller model or "
     "fewer runs at once."),
    (re.compile(r"SIGKILL|signal 9", re.I),
     "Its process was killed from outside, most often because the machine ran out of memory. "
     "Launch again with a smaller batch size or fewer runs at once."),
    (re.compile(r"gave up after", re.I),
     "It crashed again after each resume. Look at the log below for the cause before launching "
     "it again."),
    (re.compile(r"\bnan\b|non-finite|diverg", re.I),
     "Training diverged. Launch again with a lower learning rate."),
)


def failure_text(error: str | None) -> tuple[str, str]:
    """A failed run's stored error as (one readable paragraph: what happened and what to do,
    the details: the traceback or log tail, '' if none)."""
    text = (error or "").strip()
    if not text:
        return "The run failed without a recorded reason. Its log (`python -m jobs logs ID`) may say more.", ""
    head, _, tail = text.partition("\n")
    detail = tail.replace("--- last lines of its log ---", "").strip("\n")
    last = next((m for line in reversed(text.splitlines()) if (m := _EXCEPTION_LINE.match(line.strip()))), None)
    what = head.rstrip(".")
    if last:
        kind, message = last.group(1).rsplit(".", 1)[-1], last.group(2).strip()
        what = f"{what[:1].upper()}{what[1:]}: {kind}" + (f" ({message})" if message else "")
    else:
        what = what[:1].upper() + what[1:]
    advice = next((a for pattern, a in _ADVICE if pattern.search(text)), "Read the details below; fix the cause and launch the run again.")
    return f"{what}. {advice}", detail
