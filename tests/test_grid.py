"""gce_core.grid and gce_core.published: the paper's grid, its table and the published numbers."""

from __future__ import annotations

import csv
import io

import pytest

from gce_core.grid import (
    CSV_COLUMNS,
    PAPER_GRIDS,
    Grid,
    RunOutcome,
    build_table,
    cell_text,
    render,
    spec_identity,
    to_csv,
    to_latex,
    to_markdown,
)
from gce_core.published import PUBLISHED, published
from gce_core.spec import SpecError, from_preset, parse_spec

PAPER_ROWS = [f"{d} · {loss}" for d in ("CIFAR-10", "CIFAR-100", "Fashion-MNIST")
              for loss in ("CCE", "MAE", "Lq (GCE) q=0.7", "truncated Lq q=0.7 k=0.5")]
PAPER_COLUMNS = [f"uniform {r}" for r in (0.2, 0.4, 0.6, 0.8)] + [f"class-dep {r}" for r in (0.1, 0.2, 0.3, 0.4)]


def summary(best_val, last=None, best=None):
    return {"test_acc_at_best_val": best_val, "last_test_acc": last if last is not None else best_val - 0.1,
            "best_test_acc": best if best is not None else best_val + 0.01}


def md_rows(markdown: str, which: int = 0) -> list[list[str]]:
    """The cells of the ``which``-th Markdown table."""
    tables, current = [], []
    for line in markdown.splitlines():
        if line.startswith("|"):
            current.append([c.strip() for c in line.strip("|").split(" | ")])
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return [r for r in tables[which] if not r[0].startswith("---")]


# --- the grid -------------------------------------------------------------------------------------
def test_table1_is_the_papers_grid_with_its_protocol():
    grid = Grid.paper("table1")
    specs = grid.specs()
    assert len(specs) == 3 * 8 * 4 * 5 == 480
    assert len(grid.cells()) == 96 and grid.seeds == (0, 1, 2, 3, 4)
    c10 = [s for s in specs if s.dataset == "cifar10"]
    assert {(s.model, s.epochs, s.lr, s.lr_milestones, s.batch_size) for s in c10} == {("resnet34", 120, 0.01, (40, 80), 128)}
    c100 = {(s.epochs, s.lr_milestones, s.prune_start) for s in specs if s.dataset == "cifar100"}
    assert c100 == {(150, (80, 120), 80)}
    assert {s.class_map for s in specs if s.noise == "class_dependent" and s.dataset == "cifar100"} == {"cifar100_blocks"}
    assert len({spec_identity(s) for s in specs}) == 480


def test_table3_is_open_set_cifar100_images_into_cifar10():
    specs = Grid.paper("table3").specs()
    assert {(s.dataset, s.noise, s.noise_rate, s.open_set_source) for s in specs} == {("cifar10", "open_set", 0.4, "cifar100")}
    assert sorted({s.loss for s in specs}) == ["cce", "lq", "truncated_lq"]


def test_a_short_grid_scales_every_schedule_and_keeps_the_axes():
    grid = Grid.paper("table1", seeds=1, overrides={"epochs": 2})
    specs = grid.specs()
    assert len(specs) == 96
    assert {(s.epochs, s.lr_milestones) for s in specs} == {(2, (1,))}
    assert {s.prune_start for s in specs} == {2}


def test_a_grid_is_refused_whole_naming_the_cells():
    with pytest.raises(SpecError) as err:
        Grid.make(datasets=["digits"], noises=[("uniform", [0.4, 0.95])], losses=["cce"], seeds=1, preset="quick").specs()
    assert [f for f, _ in err.value.problems] == ["digits, cce, uniform 0.95: spec"]
    assert "uniform noise needs rate < 1 - 1/c" in err.value.problems[0][1]
    with pytest.raises(SpecError, match="unknown loss"):
        Grid.make(datasets=["digits"], noises=[("uniform", [0.4])], losses=["nope"], seeds=1)
    with pytest.raises(SpecError) as err:
        Grid.make(datasets=[], noises=[("rainbow", [0.4])], losses=["cce"], seeds=0)
    assert {f for f, _ in err.value.problems} == {"datasets", "noise", "seeds"}
    with pytest.raises(SpecError, match="unknown paper table"):
        Grid.paper("table2")
    with pytest.raises(SpecError, match="the paper preset is for cifar10"):
        Grid.paper("table1", datasets=["digits"]).specs()


def test_the_name_follows_what_the_runs_compute_not_how_they_run():
    a = Grid.paper("table3", seeds=1, overrides={"epochs": 2})
    b = Grid.paper("table3", seeds=1, overrides={"epochs": 2, "device": "cpu", "compile": True})
    c = Grid.paper("table3", seeds=1, overrides={"epochs": 3})
    assert a.name() == b.name() != c.name()
    assert a.name().startswith("table3-") and len(a.name()) == len("table3-") + 8
    s = parse_spec({"name": "x", "device": "cpu", "data_root": "/d"})
    assert spec_identity(s) == spec_identity(parse_spec({})) != spec_identity(parse_spec({"precision": "float32"}))


# --- published numbers ----------------------------------------------------------------------------
def test_published_numbers_carry_their_source_and_std_only_where_known():
    p = published("cifar10", "lq", "uniform", 0.4)
    assert (p.mean, p.std, p.verified) == (87.13, 0.22, True) and "ELR" in p.source and "Table 1" in p.source
    assert published("cifar100", "cce", "class_dependent", 0.4).std is None
    assert published("cifar10", "truncated_lq", "uniform", 0.8).verified is False
    assert published("cifar10", "lq", "uniform", 0.4, q=0.5) is None  # not the paper's q
    assert published("fashion_mnist", "cce", "uniform", 0.4) is None
    assert all(p.source for p in PUBLISHED) and len({(p.dataset, p.loss, p.noise, p.rate) for p in PUBLISHED}) == len(PUBLISHED)
    assert len(PUBLISHED) == 8 * 4 + 4 + 4


# --- the table ------------------------------------------------------------------------------------
def paper_outcomes(seeds=2, done=True):
    specs = Grid.paper("table1", seeds=seeds, overrides={"epochs": 2}).specs()
    return [RunOutcome(s, "done" if done else "active", summary(0.5 + 0.01 * s.seed) if done else None) for s in specs]


def test_the_markdown_table_has_the_papers_rows_and_columns_and_numbers_beside():
    table = build_table(paper_outcomes())
    md = to_markdown(table, "Table 1")
    main = md_rows(md, 0)
    assert main[0] == ["data · loss", *PAPER_COLUMNS]
    assert [r[0] for r in main[1:]] == PAPER_ROWS
    # CIFAR-10 Lq at uniform 0.4: ours 50.50 ± 0.71 over seeds 0 and 1; the paper's 87.13 ± 0.22
    assert main[3][2] == "50.50 ± 0.71 (paper 87.13 ± 0.22, -36.63)"
    assert main[4][1] == "50.50 ± 0.71 (paper 89.70†, -39.20)"  # truncated Lq: recalled, flagged
    assert main[9][1] == "50.50 ± 0.71"  # Fashion-MNIST: no published number
    assert md_rows(md, 1)[3][2] == "40.50 ± 0.71"  # last epoch: no paper column
    assert "cells 96/96 done, runs 192/192 done." in md and "† recalled" in md
    assert "Class-dependent map cifar100_blocks: each class flips to the next index" in md


def test_cells_say_how_many_runs_are_missing_and_failed():
    outs = paper_outcomes(seeds=2)
    outs[0] = RunOutcome(outs[0].spec, "failed")
    outs[2] = RunOutcome(outs[2].spec, "active")
    table = build_table(outs)
    first = table.cell(table.rows[0], table.columns[0])
    assert (first.runs, first.done, first.failed) == (2, 1, 1)
    assert cell_text(first) == "51.00 (paper 86.98 ± 0.12, -35.98) [1/2, 1 failed]"
    assert table.progress() == "cells 94/96 done, runs 190/192 done (1 failed)"
    empty = build_table(paper_outcomes(done=False))
    assert cell_text(empty.cell(empty.rows[0], empty.columns[0])) == "- (paper 86.98 ± 0.12) [0/2]"


def test_a_cell_of_runs_that_differ_in_more_than_the_seed_says_so():
    a = from_preset("quick", "digits", loss="cce", noise="uniform", noise_rate=0.4, epochs=3)
    b = a.model_copy(update={"lr": 0.5, "seed": 1})
    table = build_table([RunOutcome(a, "done", summary(0.9)), RunOutcome(b, "done", summary(0.8))])
    assert table.cell(*[table.rows[0]], table.columns[0]).mixed
    assert "(mixed configs)" in to_markdown(table)


def test_csv_and_latex_hold_the_same_cells():
    table = build_table(paper_outcomes())
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 96
    lq = next(r for r in rows if r["dataset"] == "cifar10" and r["loss"] == "Lq (GCE) q=0.7" and r["rate"] == "0.4"
              and r["noise"] == "uniform")
    assert (lq["test_acc_at_best_val_mean"], lq["paper_mean"], lq["paper_std"], lq["diff"]) == ("50.5000", "87.1300", "0.2200", "-36.6300")
    assert (lq["runs"], lq["done"], lq["paper_verified"]) == ("2", "2", "true")
    tex = to_latex(table, "GCE 50% of the time")
    assert r"\caption{GCE 50\% of the time}" in tex
    assert r"CIFAR-10 -- Lq (GCE) q=0.7 & $50.50 \pm 0.71$ (89.83) & $50.50 \pm 0.71$ (87.13)" in tex
    assert tex.count(r"\\") == 1 + 12  # header and the paper's 12 rows
    assert render(table, "md") == to_markdown(table)
    with pytest.raises(ValueError, match="unknown table format"):
        render(table, "html")


def test_paper_grids_are_data():
    assert set(PAPER_GRIDS) == {"table1", "table3"}
