"""Launch to first curve point, end to end: runs submitted through the job runner (a real
`python -m jobs worker` with its default CPU slots, its warm run processes already idle) against
the same runs as cold processes (`python -m gce_core train`, one after another), measured in the
same run.

    python -m bench.bench_instant [--rounds 5] [--busy N] [--slots N]

Per group of runs (the quick demo: CCE, MAE and Lq on digits with 40% uniform noise; and 3 losses
x 3 seeds) and per round, in alternating order: seconds from submit to the first epoch row in
the store, and to every run completed; for the cold side, from the first process's start to its
first epoch line, and to the last process's exit. ``--busy N`` runs N busy processes beside it
(a loaded machine). Also: what a warm process spends setting up a run (data, model, optimiser),
and the same groups through workers with other slot counts (1, 2, 3 on this machine's cores),
side by side in alternating order: the evidence for the default.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import Report, Table, device_facts, fmt_s, fmt_x, paired_ratio

ROOT = Path(__file__).resolve().parent.parent
BASE = dict(noise="uniform", noise_rate=0.4)
GROUPS = {
    "quick demo (CCE, MAE, Lq)": [dict(BASE, loss=loss) for loss in ("cce", "mae", "lq")],
    "3 losses x 3 seeds": [dict(BASE, loss=loss, seed=seed) for loss in ("cce", "mae", "lq") for seed in range(3)],
}
TARGETS = {  # (first row, all completed), seconds; the targets on a quiet machine
    "quick demo (CCE, MAE, Lq)": (0.8, 2.5),
    "3 losses x 3 seeds": (None, 6.0),
}
POLL_S = 0.1  # the client's look at the store (a page refreshes every few seconds)
FIRST_EPOCH = re.compile(rb"\| *1/\d+ \[")


def _specs(fields: list[dict]):
    from gce_core.spec import from_preset

    return [from_preset("quick", "digits", **f) for f in fields]


@contextlib.contextmanager
def busy_processes(n: int) -> Iterator[None]:
    """``n`` processes spinning a core each while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@contextlib.contextmanager
def lab_worker(home: Path, slots: int) -> Iterator[object]:
    """A real `python -m jobs worker` on ``home`` with ``slots`` CPU slots; yields a LabClient once
    its run processes have warmed up."""
    from jobs.client import LabClient

    url = f"sqlite:///{home / 'gce_lab.db'}"
    env = {**os.environ, "GCE_LAB_HOME": str(home), "GCE_LAB_DB_URL": url, "PYTHONPATH": str(ROOT)}
    log = open(home / "worker.log", "ab")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([sys.executable, "-m", "jobs", "worker", "--slots", str(slots), "--cpu"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    client = LabClient(url)
    try:
        deadline = time.monotonic() + 300
        while _ready_processes(home) < slots:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not warm up; see {home / 'worker.log'}")
            time.sleep(0.05)
        yield client
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        client.close()
        log.close()


def _ready_processes(home: Path) -> int:
    logs = (home / "workers").glob("slot-*.log")
    return sum(1 for p in logs if "ready in" in p.read_text(errors="replace"))


def through_runner(client, specs) -> tuple[float, float]:
    """Seconds from submit to the first stored epoch row, and to every run completed, by the
    store's own clock (each epoch row's recorded_at, each run's finished_at): the client looks
    only every POLL_S, as a page does, so its polling neither eats the CPU the runs train on nor
    rounds the figures up to its period."""
    from sqlalchemy import func, select

    from jobs.schema import metrics
    from jobs.status import RunStatus

    submitted = time.time()
    _, ids = client.submit_group(specs)
    while True:
        records = client.store.get_many(ids)
        if all(r.status.is_final for r in records.values()):
            break
        time.sleep(POLL_S)
    bad = [r.id for r in records.values() if r.status != RunStatus.COMPLETED]
    if bad:
        raise SystemExit(f"runs did not complete: {bad}")
    first = client.store.db.read(lambda conn: conn.execute(
        select(func.min(metrics.c.recorded_at)).where(metrics.c.run_id.in_(ids))).scalar())
    done = max(r.finished_at for r in records.values()).timestamp()
    return first - submitted, done - submitted


def cold_processes(specs, folder: Path) -> tuple[float, float]:
    """Seconds from the first `python -m gce_core train` start to its first epoch line, and to
    the last of them (one after another) exiting."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    first = None
    for i, spec in enumerate(specs):
        path = folder / f"spec-{i}.json"
        path.write_text(spec.to_json())
        out = folder / f"out-{i}-{time.monotonic_ns()}"
        proc = subprocess.Popen([sys.executable, "-m", "gce_core", "train", "--spec", str(path), "--out", str(out)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seen = b""
        while chunk := proc.stdout.read1(65536):  # its progress bar: "| 1/60 [" once epoch 1 is done
            if first is None:
                seen = seen[-64:] + chunk
                if FIRST_EPOCH.search(seen):
                    first = time.perf_counter() - started
        if proc.wait() != 0:
            raise SystemExit(f"`python -m gce_core train` failed for {spec.label()}")
    return first, time.perf_counter() - started


def setup_costs(repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of each step of a run's set-up in a warm process (after warm_up)."""
    import torch

    from gce_core.experiment_data import build_experiment_data
    from gce_core.train import make_optimizer, new_model
    from jobs.worker_process import warm_up

    warm_up()
    spec = _specs([dict(BASE, loss="lq", seed=7)])[0]
    device = torch.device("cpu")
    times: dict[str, list[float]] = {"data": [], "model": [], "optimiser": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = build_experiment_data(spec, device)
        t1 = time.perf_counter()
        model = new_model(spec, data, device)
        t2 = time.perf_counter()
        make_optimizer(spec, model.parameters())
        t3 = time.perf_counter()
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            times[key].append(seconds)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


QUICK = "quick demo (CCE, MAE, Lq)"


def slot_choices(rounds: int, choices: tuple[int, ...] = (1, 2, 3)) -> Table:
    """Each group through workers with each slot count in ``choices`` (all warm at once, each on its
    own store), in alternating order round after round; medians of submit to all completed."""
    from jobs.config import default_cpu_slots

    done: dict[tuple[str, int], list[float]] = {}
    with contextlib.ExitStack() as stack:
        clients = {}
        for n in choices:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            clients[n] = stack.enter_context(lab_worker(home, n))
            through_runner(clients[n], _specs(GROUPS[QUICK]))  # untimed: warm the store
        for name, fields in GROUPS.items():
            specs = _specs(fields)
            for r in range(rounds):
                for n in choices if r % 2 == 0 else choices[::-1]:
                    done.setdefault((name, n), []).append(through_runner(clients[n], specs)[1])
    cores = os.cpu_count() or 1
    rows = [[f"{n}{' (default)' if n == default_cpu_slots() else ''}", str(max(1, cores // n)),
             *(fmt_s(statistics.median(done[(name, n)])) for name in GROUPS)] for n in choices]
    return Table(
        f"Slot counts: submit to all completed ({rounds} rounds, medians)",
        ["CPU slots", "torch threads each", *(f"{name}: all completed" for name in GROUPS)],
        rows,
        f"A `python -m jobs worker --slots N` per row, all warm at once on {cores} cores, each on its own "
        "store; the groups go to each in alternating order. A slot has cores / slots torch threads "
        "(at least 1).",
    )


def run(rounds: int = 5, busy: int = 0, groups: tuple[str, ...] = tuple(GROUPS), slots: int | None = None) -> Report:
    from jobs.config import default_cpu_slots

    which = "its default here" if not slots or slots == default_cpu_slots() else "not its default"
    slots = slots or default_cpu_slots()
    facts = device_facts("cpu")
    facts["worker slots"] = str(slots)
    facts["busy processes beside it"] = str(busy)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp, busy_processes(busy):
        home = Path(tmp)
        with lab_worker(home, slots) as client:
            through_runner(client, _specs(GROUPS[QUICK]))  # untimed: warm the store
            for name in groups:
                specs = _specs(GROUPS[name])
                lab, cold = [], []
                for r in range(rounds):
                    order = (("lab", lab), ("cold", cold)) if r % 2 == 0 else (("cold", cold), ("lab", lab))
                    for side, out in order:
                        out.append(through_runner(client, specs) if side == "lab" else cold_processes(specs, home))
                first_ratio = paired_ratio([c[0] for c in cold], [x[0] for x in lab])
                done_ratio = paired_ratio([c[1] for c in cold], [x[1] for x in lab])
                med = [statistics.median(v[i] for v in side) for side in (lab, cold) for i in (0, 1)]
                rows.append([name, str(len(specs)), fmt_s(med[0]), fmt_s(med[1]), fmt_s(med[2]), fmt_s(med[3]),
                             fmt_x(first_ratio), fmt_x(done_ratio)])
                want_first, want_done = TARGETS[name]
                line = (f"{name}: first epoch row {fmt_s(med[0])}, all completed {fmt_s(med[1])} "
                        f"(cold processes: {fmt_s(med[2])} and {fmt_s(med[3])}; {fmt_x(first_ratio)} and "
                        f"{fmt_x(done_ratio)} faster)")
                if not busy:
                    hits = []
                    if want_first is not None:
                        hits.append(f"first row <= {want_first} s: {'met' if med[0] <= want_first else 'MISSED'}")
                    hits.append(f"completed <= {want_done} s: {'met' if med[1] <= want_done else 'MISSED'}")
                    hits.append(f"ratios >= 3x: {'met' if min(first_ratio, done_ratio) >= 3 else 'MISSED'}")
                    line += "; targets: " + ", ".join(hits)
                summary.append(line)
    table = Table(
        f"Submit to first stored epoch row and to all completed ({rounds} rounds, medians)",
        ["runs", "n", "lab: first row", "lab: all completed", "cold: first epoch", "cold: all done",
         "cold / lab, first", "cold / lab, completed"],
        rows,
        f"lab: `LabClient.submit_group` to rows in the store, through a `python -m jobs worker` with {slots} CPU "
        f"slots ({which}) whose warm run processes are idle; timed by the store's own clock (the first epoch "
        f"row's recorded_at, the last run's finished_at), the client looking every {POLL_S:g} s. cold: "
        "`python -m gce_core train` per run, one after another (a process start each: Python, torch, the "
        "library, the first optimiser).",
    )
    tables = [table]
    if not busy:
        costs = setup_costs()
        tables.append(Table(
            "A run's set-up in a warm process (median of 20, ms)",
            ["experiment data (noise, split, normalise; raw set cached)", "model (seeded init)", "optimiser"],
            [[f"{costs['data']:.2f}", f"{costs['model']:.2f}", f"{costs['optimiser']:.2f}"]],
            "Measured in this process after the warm process's warm_up(): the raw data set is loaded "
            "once per process (gce_core.data.load_raw's cache), so a run's data is a few tensor ops.",
        ))
        tables.append(slot_choices(max(rounds, 5)))
    title = "Instant runs: the job runner's warm processes against cold processes"
    if busy:
        title += f", with {busy} busy processes beside them"
    return Report(title, facts, tables, summary)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per group (default: 5)")
    parser.add_argument("--busy", type=int, default=0, help="busy processes beside the benchmark (default: 0)")
    parser.add_argument("--slots", type=int, default=None, help="the worker's CPU slots (default: its own default)")
    parser.add_argument("--quick-demo-only", action="store_true", help="only the quick demo group (default: both)")
    args = parser.parse_args(argv)
    groups = (QUICK,) if args.quick_demo_only else tuple(GROUPS)
    print(run(rounds=args.rounds, busy=args.busy, groups=groups, slots=args.slots).markdown())


if __name__ == "__main__":
    main()
