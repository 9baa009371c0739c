"""app.runs_logic: the runs table, ETA text, what a selection allows, colours, tags."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest

from app import runs_logic as rl
from gce_core.spec import RunSpec, from_preset
from jobs.status import RunStatus


@dataclass
class Rec:  # the RunRecord fields the table reads
    id: str
    spec: RunSpec
    status: RunStatus
    epochs_done: int = 0
    progress: float = 0.0
    eta_seconds: float | None = None
    device: str | None = None
    group: str | None = "g"
    tags: tuple[str, ...] = ()
    archived: bool = False
    summary: dict | None = None
    created_at: datetime = field(default_factory=lambda: datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))


def _spec(loss="lq", seed=0, name=""):
    return from_preset("quick", "digits", noise="uniform", noise_rate=0.4, loss=loss, seed=seed, name=name)


@pytest.mark.parametrize(("seconds", "text"), [(None, "-"), (math.inf, "-"), (-1, "-"), (8.4, "8 s"), (185, "3 min 05 s"), (7800, "2 h 10 min")])
def test_format_eta(seconds, text):
    assert rl.format_eta(seconds) == text


def test_runs_table_rows():
    runs = [
        Rec("a1", _spec(), RunStatus.RUNNING, epochs_done=10, progress=0.25, eta_seconds=30, device="cpu"),
        Rec("b2", _spec("cce", name="my <b>run</b>"), RunStatus.COMPLETED, epochs_done=40, progress=1.0, summary={"test_acc_at_best_val": 0.9431}, tags=("x", "y")),
    ]
    table = rl.runs_table(runs, selected=["b2"])
    assert list(table.columns) == ["selected", *rl.TABLE_COLUMNS]
    first, second = table.to_dict("records")
    assert first["status"] == "▶ running" and first["epochs"] == "10/60" and first["ETA"] == "30 s"
    assert first["test acc @ best val (%)"] == "–" and not first["selected"]
    # a name never hides the loss, q or seed
    assert second["run"] == "my <b>run</b> · cce | uniform 0.4 | seed 0" and second["ETA"] == "" and second["selected"]
    assert second["test acc @ best val (%)"] == "94.31" and second["tags"] == "x, y"


def test_selection_rules_and_signature():
    runs = [Rec("a", _spec(), RunStatus.QUEUED), Rec("b", _spec(), RunStatus.COMPLETED), Rec("c", _spec(), RunStatus.INTERRUPTED)]
    assert rl.cancellable(runs) == ["a", "c"]
    assert rl.deletable(runs) == (["b"], ["a", "c"])
    assert rl.any_active(runs) and not rl.any_active(runs[1:2])
    before = rl.status_signature(runs)
    runs[0].status = RunStatus.RUNNING
    assert rl.status_signature(runs) != before


def test_colours_follow_the_loss():
    runs = [Rec("a", _spec("cce"), RunStatus.RUNNING), Rec("b", _spec("cce", seed=1), RunStatus.RUNNING), Rec("c", _spec("lq"), RunStatus.RUNNING)]
    labels = {r.id: rl.run_label(r) for r in runs}
    colors = rl.run_colors(runs, labels)
    assert colors[labels["a"]] == "#d62728" and colors[labels["c"]] == "#1f77b4"
    assert colors[labels["b"]] not in ("#d62728", "#1f77b4")  # a lighter red
    assert labels["a"] == "cce | uniform 0.4 | seed 0 (#a)"


def test_parse_tags():
    assert rl.parse_tags("paper, baseline ,, paper, x") == ["paper", "baseline", "x"]
    assert rl.parse_tags("   ") == []
    assert len(rl.parse_tags("y" * 99)[0]) == 40


def test_status_flags_runs_at_chance_and_runs_waiting_for_storage():
    from jobs.records import RunRecord

    at_chance = RunRecord.__dict__["at_chance"]  # the store's rule, applied to the table's stand-in
    done = Rec("c3", _spec(), RunStatus.COMPLETED, summary={"warning": "ended at chance level: test accuracy 9.72%"})
    done.at_chance = at_chance.fget(type("R", (), {"warning": done.summary["warning"]})())
    waiting = Rec("d4", _spec(), RunStatus.QUEUED)
    waiting.storage_faults, waiting.not_before = 2, datetime(2025, 1, 2, 3, 5, tzinfo=timezone.utc)
    plain = Rec("e5", _spec(), RunStatus.COMPLETED, summary={"last_test_acc": 0.9})
    assert [rl.status_text(r) for r in (done, waiting, plain)] == [
        "✔ completed ⚠ at chance", "○ queued ⏸ storage fault", "✔ completed"]
