"""The paper's grid on the job runner: `python -m jobs grid`.

The grid (gce_core.grid.Grid) expands into specs; a spec whose run is already in the store
(same ``spec_identity``: completed, or queued or training) is reused, not queued again, so
running the command again after a crash or an interruption queues only what is missing, and a
failed or cancelled run is queued again. New runs go into the group named by the grid
(``Grid.name()``, or --name) and every run of the grid, reused ones too, carries the tag
``grid:NAME``: the app's "Paper table" page lists grids by it. Queuing respects the lab's
per-owner queue limit: what does not fit yet is queued as runs finish, while the command waits.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gce_core.cli import UsageError
from gce_core.grid import (
    FORMATS,
    PAPER_GRIDS,
    Grid,
    GridTable,
    RunOutcome,
    build_table,
    render,
    spec_identity,
)
from gce_core.spec import RunSpec
from jobs import config
from jobs.client import MAX_TAGS, LabClient, SubmitRefused
from jobs.records import RunRecord
from jobs.status import RunStatus

TAG_PREFIX = "grid:"
GRID_AXES = ("dataset", "noise", "noise_rate", "loss", "seed", "name")  # spec fields the grid sets
PAGE = 1000


def grid_tag(name: str) -> str:
    return TAG_PREFIX + name


def run_state(run: RunRecord | None) -> str:
    """A run's RunOutcome state: done, active, failed, or missing (no run)."""
    if run is None:
        return "missing"
    if run.status == RunStatus.COMPLETED:
        return "done"
    return "failed" if run.status.is_final else "active"


_RANK = {"done": 0, "active": 1, "failed": 2}


def _better(run: RunRecord, than: RunRecord | None) -> bool:
    """Whether ``run`` stands for its spec rather than ``than`` (both the same spec): a
    completed run before a queued or training one before one that ended without a result; the
    newest first among equals (runs come newest first, so the first one seen stays)."""
    return than is None or _RANK[run_state(run)] < _RANK[run_state(than)]


def find_runs(client: LabClient, specs: Sequence[RunSpec]) -> dict[str, RunRecord]:
    """identity -> the store's run that stands for each spec that has one (not archived):
    completed, else queued or training, else failed or cancelled."""
    wanted = {spec_identity(s) for s in specs}
    found: dict[str, RunRecord] = {}
    offset = 0
    while True:
        page = client.list_runs(limit=PAGE, offset=offset)  # newest first
        for run in page:
            key = spec_identity(run.spec)
            if key in wanted and _better(run, found.get(key)):
                found[key] = run
        if len(page) < PAGE:
            return found
        offset += PAGE


def outcomes(specs: Sequence[RunSpec], found: dict[str, RunRecord]) -> list[RunOutcome]:
    out = []
    for spec in specs:
        run = found.get(spec_identity(spec))
        out.append(RunOutcome(spec, run_state(run), None if run is None else run.summary))
    return out


def tagged_outcomes(client: LabClient, name: str) -> list[RunOutcome]:
    """The outcomes of every run carrying the grid's tag (what the app's page shows)."""
    runs, offset = [], 0
    while True:
        page = client.list_runs(tag=grid_tag(name), include_archived=True, limit=PAGE, offset=offset)
        runs += page
        if len(page) < PAGE:
            break
        offset += PAGE
    # A spec run twice (a failed run, then its repeat): the best attempt counts once.
    best: dict[str, RunRecord] = {}
    for run in runs:
        key = spec_identity(run.spec)
        if _better(run, best.get(key)):
            best[key] = run
    return [RunOutcome(r.spec, run_state(r), r.summary) for r in best.values()]


def grid_names(client: LabClient) -> list[str]:
    """Names of the grids in the store (groups whose runs carry their grid tag), newest first."""
    return [g for g in client.groups(include_archived=True)
            if client.count_runs(group=g, tag=grid_tag(g), include_archived=True)]


@dataclass
class GridSession:
    """One grid being filled: its specs, the runs found for them, what is still to queue."""

    client: LabClient
    name: str
    specs: list[RunSpec]
    owner: str = "local"
    found: dict[str, RunRecord] = field(default_factory=dict)
    queued: int = 0
    requeued: set[str] = field(default_factory=set)  # identities queued again by this session

    def refresh(self) -> GridTable:
        self.found = find_runs(self.client, self.specs)
        return build_table(outcomes(self.specs, self.found))

    def missing(self) -> list[RunSpec]:
        """Specs to queue: no run yet, or one that ended without a result (failed, cancelled),
        queued again once per session (a run that fails every time is not retried forever)."""
        out = []
        for spec in self.specs:
            key = spec_identity(spec)
            run = self.found.get(key)
            if run is None or (run_state(run) == "failed" and key not in self.requeued):
                out.append(spec)
        return out

    def finished(self) -> bool:
        """Nothing is left to queue or waiting to end."""
        return not self.missing() and all(run_state(r) != "active" for r in self.found.values())

    def tag_reused(self) -> int:
        """Add the grid's tag to runs found in the store that lack it; how many were tagged."""
        tag, count = grid_tag(self.name), 0
        for run in self.found.values():
            if tag not in run.tags and len(run.tags) < MAX_TAGS:
                self.client.tag(run.id, [*run.tags, tag])
                count += 1
        return count

    def submit_missing(self) -> int:
        """Queue the missing runs, as many as the owner's queue limit and the group size allow
        now; how many were queued."""
        missing = self.missing()
        if not missing:
            return 0
        limits = self.client.limits
        waiting = self.client.count_runs(owner=self.owner, status=RunStatus.QUEUED, include_archived=True)
        room = min(limits.max_queued_per_owner - waiting, limits.max_group_size)
        if room <= 0:
            return 0
        batch = missing[:room]
        _, ids = self.client.submit_group(batch, owner=self.owner, group=self.name, tags=[grid_tag(self.name)])
        runs = self.client.store.get_many(ids)
        for spec, run_id in zip(batch, ids, strict=True):
            key = spec_identity(spec)
            if key in self.found:
                self.requeued.add(key)
            self.found[key] = runs[run_id]
        self.queued += len(ids)
        return len(ids)


# --- the command ---------------------------------------------------------------------------------
def _csv(kind):
    def parse(text: str):
        try:
            return [kind(x.strip()) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def _noise_axis(text: str) -> tuple[str, list[float]]:
    kind, sep, rates = text.partition(":")
    if not sep or not kind.strip():
        raise argparse.ArgumentTypeError(f"expected KIND:RATE,RATE (like uniform:0.2,0.4), got {text!r}")
    return kind.strip(), _csv(float)(rates)


def add_grid_parser(sub, add_spec_options) -> None:
    """The `grid` subcommand of `python -m jobs`."""
    p = sub.add_parser(
        "grid", help="run the paper's grid (or any grid) on the job runner and print its table beside "
                     "the published numbers; again, it reuses finished runs",
        description="Queue data sets x noise kinds x rates x losses x seeds, wait, and print the table: mean ± std "
                    "of test accuracy at the best noisy-validation epoch (the paper's metric), last epoch and best "
                    "test epoch, with the published mean ± std and the difference.")
    p.add_argument("--paper", choices=tuple(PAPER_GRIDS),
                   help="the paper's grid: table1 (CIFAR-10, CIFAR-100, Fashion-MNIST; uniform 0.2-0.8, "
                        "class-dependent 0.1-0.4; CCE, MAE, Lq, truncated Lq; 5 seeds) or table3 (open-set, "
                        "CIFAR-100 images into CIFAR-10 at 40%%) (default: none; then give every axis)")
    p.add_argument("--datasets", type=_csv(str), help="comma-separated data sets (default: the paper table's)")
    p.add_argument("--noises", type=_noise_axis, action="append", metavar="KIND:RATES",
                   help="a noise kind and its rates, like uniform:0.2,0.4; repeat for several kinds "
                        "(default: the paper table's)")
    p.add_argument("--losses", type=_csv(str), help="comma-separated losses (default: the paper table's)")
    p.add_argument("--seeds", type=int, help="runs per cell, seeds 0..N-1 (default: the paper table's 5, else 1)")
    p.add_argument("--name", help="the grid's name: group and tag grid:NAME of its runs (default: the table and a "
                                  "hash of what its runs compute, like table1-3fa2c1d0)")
    p.add_argument("--owner", default="local", help="who the runs are for (default: local)")
    p.add_argument("--no-wait", action="store_true", help="queue and return; run the same command again to "
                   "queue the rest and print the table (default: wait and print the table at the end)")
    p.add_argument("--table", action="store_true", help="queue nothing: print the table of what has finished")
    p.add_argument("--format", choices=tuple(FORMATS), default="md", help="printed table format (default: md)")
    p.add_argument("--out", type=Path, help="also write the table to PREFIX.md, PREFIX.csv and PREFIX.tex "
                                            "(default: <lab home>/grids/NAME.*)")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between progress checks (default: 5)")
    add_spec_options(p, skip=GRID_AXES)
    p.set_defaults(func=cmd_grid)


def grid_from_args(args: argparse.Namespace) -> Grid:
    overrides = {k: getattr(args, k) for k in RunSpec.model_fields
                 if k not in GRID_AXES and getattr(args, k, None) is not None}
    if args.spec is not None:
        raise UsageError("grid takes spec options (--epochs 2, --model cnn), not --spec")
    noises = [(kind, rates) for kind, rates in args.noises] if args.noises else None
    changes = dict(datasets=args.datasets, noises=noises, losses=args.losses, seeds=args.seeds,
                   preset=args.preset or "paper", overrides=overrides)
    if args.paper:
        return Grid.paper(args.paper, **changes)
    missing = [f"--{n}" for n in ("datasets", "noises", "losses") if getattr(args, n) is None]
    if missing:
        raise UsageError(f"give --paper table1|table3, or every axis: {', '.join(missing)} missing")
    return Grid.make(**{**changes, "seeds": 1 if args.seeds is None else args.seeds}, label="grid")


def write_tables(table: GridTable, prefix: Path, title: str) -> list[Path]:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = prefix.with_name(f"{prefix.name}.{fmt}")
        path.write_text(render(table, fmt, title))
        paths.append(path)
    return paths


def cmd_grid(client: LabClient, args: argparse.Namespace,
             sleep: Callable[[float], None] = time.sleep) -> int:
    grid = grid_from_args(args)
    specs = grid.specs()
    name = args.name or grid.name()
    if len(grid_tag(name)) > 40:
        raise UsageError(f"--name {name!r} is too long: a grid name has at most {40 - len(TAG_PREFIX)} characters")
    session = GridSession(client, name, specs, owner=args.owner)
    title = f"{grid.label}: {name}"
    table = session.refresh()
    if not args.table:
        reused = sum(run_state(r) in ("done", "active") for r in session.found.values())
        session.tag_reused()
        try:
            session.submit_missing()
        except SubmitRefused as exc:
            raise UsageError(str(exc)) from None
        print(f"grid {name}: {len(specs)} runs in {len(grid.cells())} cells; {reused} found in the store, "
              f"{session.queued} queued, {len(session.missing())} to queue as the queue drains", file=sys.stderr)
        if not session.finished() and not client.executor_info()["workers_alive"]:
            print("no worker is running; start one with `python -m jobs worker`", file=sys.stderr)
        table = session.refresh()
        if not args.no_wait:
            table = _wait(session, args.poll, sleep)
    print(render(table, args.format, title), end="")
    if not args.table or args.out:
        prefix = args.out or config.lab_home() / "grids" / name
        paths = write_tables(table, prefix, title)
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    if args.no_wait and not args.table:
        print(f"the runs train in the background; `python -m jobs grid ... --table` (same options) prints the "
              f"table so far, and the app's Paper table page shows grid {name}", file=sys.stderr)
    return 0


def _wait(session: GridSession, poll: float, sleep: Callable[[float], None]) -> GridTable:
    """Until every run of the grid has ended: top the queue up and print the progress."""
    last = ""
    while True:
        table = session.refresh()
        if session.missing():
            try:
                session.submit_missing()
            except SubmitRefused as exc:
                raise UsageError(str(exc)) from None
            table = session.refresh()
        line = table.progress()
        if line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        if session.finished():
            return table
        sleep(poll)
