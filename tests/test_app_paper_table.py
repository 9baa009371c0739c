"""The Paper table page: a grid of `python -m jobs grid` beside the published numbers."""

from __future__ import annotations

import time

import pytest

from app.paper_table_logic import COLORS, distance_class, frame
from gce_core.grid import Grid, RunOutcome, build_table
from jobs.client import LabClient
from jobs.grid import GridSession
from tests.test_app_pages import app, no_errors, page

PAGE = "views/paper_table.py"


@pytest.fixture
def client(lab_home) -> LabClient:
    from streamlit import config

    config.set_option("server.address", "127.0.0.1")
    return LabClient()


def small_table1() -> Grid:
    return Grid.paper("table1", datasets=["cifar10", "cifar100"], losses=["cce", "lq"],
                      noises=[("uniform", [0.4]), ("class_dependent", [0.2])], seeds=2, overrides={"epochs": 2})


def finish(client: LabClient, accuracy: float, count: int | None = None) -> None:
    """Play worker: complete ``count`` queued runs (all by default) at ``accuracy``."""
    done = 0
    while (count is None or done < count) and (
            run := client.store.claim(worker_id="t", host="t", device="cpu", now=time.time())) is not None:
        client.store.complete(run.id, run.claim_token, {"test_acc_at_best_val": accuracy, "last_test_acc": accuracy,
                                                        "best_test_acc": accuracy}, now=time.time())
        done += 1


def test_cells_are_coloured_by_their_distance_from_the_published_mean():
    specs = small_table1().specs()
    by_acc = {0.82: "near", 0.8: "mid", 0.7: "far"}  # CIFAR-10 CCE at uniform 0.4: the paper's 81.88
    for acc, expected in by_acc.items():
        summary = {"test_acc_at_best_val": acc, "last_test_acc": acc, "best_test_acc": acc}
        table = build_table([RunOutcome(s, "done", summary) for s in specs])
        cell = table.cell(("cifar10", "CCE"), ("uniform", 0.4))
        assert distance_class(cell) == expected
    texts, css = frame(table, "test_acc_at_best_val")
    assert css.loc["CIFAR-10 · CCE", "uniform 0.4"] == COLORS["far"]
    assert texts.loc["CIFAR-10 · CCE", "uniform 0.4"] == "70.00 ± 0.00 (paper 81.88 ± 0.29, -11.88)"
    texts, css = frame(table, "last_test_acc")
    assert texts.loc["CIFAR-10 · CCE", "uniform 0.4"] == "70.00 ± 0.00" and set(css.stack()) == {""}
    assert distance_class(None) == "" and distance_class(build_table(
        [RunOutcome(specs[0], "active")]).cell(("cifar10", "CCE"), ("uniform", 0.4))) == ""


def test_the_page_shows_a_grid_filling_in_and_names_the_class_map(client):
    at = app().run()
    at = page(at, PAGE)
    no_errors(at)
    assert at.title[0].value == "Paper table"
    assert "python -m jobs grid --paper table1" in at.info[0].value  # no grid yet: how to start one
    grid = small_table1()
    session = GridSession(client, grid.name(), grid.specs())
    session.refresh()
    session.submit_missing()
    finish(client, 0.8188, count=2)  # the first cell, CIFAR-10 CCE uniform 0.4: both seeds
    at = page(at, PAGE)
    no_errors(at)
    assert at.selectbox(key="paper_grid").value == grid.name()
    shown = at.dataframe[0].value
    assert list(shown.columns) == ["uniform 0.4", "class-dep 0.2"]
    assert list(shown.index) == ["CIFAR-10 · CCE", "CIFAR-10 · Lq (GCE) q=0.7", "CIFAR-100 · CCE", "CIFAR-100 · Lq (GCE) q=0.7"]
    assert shown.loc["CIFAR-10 · CCE", "uniform 0.4"] == "81.88 ± 0.00 (paper 81.88 ± 0.29, +0.00)"
    assert shown.loc["CIFAR-10 · Lq (GCE) q=0.7", "uniform 0.4"] == "- (paper 87.13 ± 0.22) [0/2]"
    assert any("cells 1/8 done, runs 2/16 done" in m.value for m in at.markdown)
    captions = " ".join(c.value for c in at.caption)
    assert "Class-dependent map cifar100_blocks" in captions and "not the semantic super-classes" in captions
    assert "14 run(s) still queued or training" in captions
    assert [b.label for b in at.get("download_button")] == ["Markdown", "CSV", "LaTeX"]
    finish(client, 0.5)
    at.selectbox(key="paper_metric").set_value("last_test_acc")
    at = at.run()
    no_errors(at)
    assert at.dataframe[0].value.loc["CIFAR-100 · Lq (GCE) q=0.7", "class-dep 0.2"] == "50.00 ± 0.00"
    assert at.query_params["grid"] == grid.name() and at.query_params["metric"] == "last_test_acc"
