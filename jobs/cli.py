"""Command line of the job runner: `python -m jobs submit|list|show|logs|cancel|export|lesson|worker|grid`.

The database is $GCE_LAB_DB_URL (default: the SQLite file in $GCE_LAB_HOME, ~/.gce_lab), or
--db URL. Bad input gets one line per problem on stderr and exit code 2, never a traceback; a database that
cannot be used (disk full, read-only) one line and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gce_core.cli import Parser, UsageError, add_spec_options, error_line, spec_from_args
from gce_core.lesson import get_step, step_keys, steps
from gce_core.spec import SpecError
from jobs import config, lesson
from jobs.client import LabClient, RunNotFound, StoreUnavailable
from jobs.logs import read_tail
from jobs.records import RunRecord
from jobs.status import RunStatus

USAGE_ERROR = 2
STORE_ERROR = 1  # the database cannot be used (one line saying why)


# --- formatting ----------------------------------------------------------------------------------
def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table, columns as wide as their widest cell."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _ago(dt) -> str:
    return "-" if dt is None else format_seconds(time.time() - dt.timestamp()) + " ago"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def status_text(run: RunRecord) -> str:
    if run.status == RunStatus.RUNNING and run.cancel_requested:
        return "cancelling"
    if run.status.is_final is False and run.not_before is not None and run.not_before.timestamp() > time.time():
        return f"{run.status.value}, retry in {format_seconds(run.not_before.timestamp() - time.time())}"
    if run.status == RunStatus.COMPLETED and run.at_chance:
        return "completed (at chance)"
    return run.status.value


def _short(text: str | None, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def runs_table(runs: Sequence[RunRecord]) -> str:
    headers = ("ID", "STATUS", "NAME", "EPOCHS", "ETA", "TEST@BEST-VAL", "OWNER", "GROUP", "CREATED")
    rows = [(
        r.id, _short(status_text(r), 24), _short(r.name, 44), f"{r.epochs_done}/{r.spec.epochs}",
        format_seconds(r.eta_seconds) if not r.status.is_final else "-",
        _pct((r.summary or {}).get("test_acc_at_best_val")), _short(r.owner, 16), _short(r.group, 28),
        _ago(r.created_at),
    ) for r in runs]
    return format_table(headers, rows)


def spec_text(spec) -> str:
    """The fields that differ from RunSpec's defaults, as `key=value`."""
    fields = type(spec).model_fields
    changed = {k: v for k, v in spec.to_dict().items() if v != fields[k].default and not (v == [] and fields[k].default == ())}
    return " ".join(f"{k}={json.dumps(v)}" for k, v in changed.items()) or "(all defaults)"


def show_text(run: RunRecord, last_row: dict | None, log_tail: str) -> str:
    state = status_text(run)
    if not run.status.is_final:
        state += f" - epoch {run.epochs_done}/{run.spec.epochs} ({100 * run.progress:.0f}%), ETA {format_seconds(run.eta_seconds)}"
    lines = [
        f"run {run.id}: {run.name}",
        f"  status      {state}",
        f"  owner       {run.owner}    group {run.group or '-'}    tags {', '.join(run.tags) or '-'}"
        + ("    (archived)" if run.archived else ""),
        f"  created     {run.created_at:%Y-%m-%d %H:%M:%S} UTC    started {_ago(run.started_at)}    "
        f"finished {_ago(run.finished_at)}",
        f"  where       {run.device or '-'} on {run.host or '-'}, pid {run.pid or '-'}, heartbeat {_ago(run.heartbeat_at)}",
        f"  attempts    {run.attempts} started, {run.crashes} crashed",
    ]
    if run.summary:
        s = run.summary
        lines.append(f"  result      test accuracy {_pct(s.get('test_acc_at_best_val'))} at best validation epoch "
                     f"{s.get('best_val_epoch')} (last {_pct(s.get('last_test_acc'))}, best {_pct(s.get('best_test_acc'))})")
    if last_row:
        loss = last_row.get("train_loss")
        lines.append(f"  last epoch  {last_row.get('epoch')}: train loss {'-' if loss is None else f'{loss:.4f}'}, "
                     f"val {_pct(last_row.get('val_acc'))}, test {_pct(last_row.get('test_acc'))}")
    if run.warning:
        lines.append(f"  warning     {run.warning}")
    if run.error:
        lines.append("  error       " + run.error.replace("\n", "\n              "))
    lines.append("  spec        " + spec_text(run.spec))
    lines.append(f"  log         {config.log_path(run.id)}")
    if log_tail:
        lines.append("    " + log_tail.replace("\n", "\n    "))
    return "\n".join(lines)


# --- commands ------------------------------------------------------------------------------------
def _csv_list(kind):
    return lambda text: [kind(x) for x in text.split(",") if x.strip()]


def cmd_submit(client: LabClient, args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    tags = args.tag or ()
    if args.losses or args.noise_rates or args.seeds:
        group, ids = client.submit_grid(
            spec, losses=args.losses or [spec.loss], noise_rates=args.noise_rates or [spec.noise_rate],
            seeds=args.seeds or [spec.seed], owner=args.owner, group=args.group, tags=tags)
        print(f"queued {len(ids)} runs in group {group}: {' '.join(ids)}")
    else:
        run_id = client.submit(spec, owner=args.owner, group=args.group, tags=tags)
        print(f"queued run {run_id}: {spec.label()}")
    if not client.executor_info()["workers_alive"]:
        print("no worker is running; start one with `python -m jobs worker`", file=sys.stderr)
    return 0


def cmd_list(client: LabClient, args: argparse.Namespace) -> int:
    filters = dict(status=args.status, owner=args.owner, group=args.group, tag=args.tag, include_archived=args.all)
    runs = client.list_runs(**filters, limit=args.limit, offset=args.offset)
    total = client.count_runs(**filters)
    if not runs:
        print("no runs" + (" match" if total or any(v for v in filters.values()) else " yet; submit one with `python -m jobs submit`"))
        return 0
    print(runs_table(runs))
    end = args.offset + len(runs)
    more = f"; --offset {end} for more" if end < total else ""
    print(f"runs {args.offset + 1}-{end} of {total}, newest first{more}")
    return 0


def cmd_show(client: LabClient, args: argparse.Namespace) -> int:
    run = client.get(args.run_id)
    rows = client.metrics(run.id, max(0, run.epochs_done - 1))
    print(show_text(run, rows[-1] if rows else None, read_tail(config.log_path(run.id), args.lines)))
    return 0


def cmd_logs(client: LabClient, args: argparse.Namespace) -> int:
    run = client.get(args.run_id)
    path = config.log_path(run.id)
    if not path.exists():
        print(f"run {run.id} has no log yet ({path})")
        return 0
    print(path.read_text(errors="replace") if args.lines == 0 else read_tail(path, args.lines))
    return 0


def cmd_cancel(client: LabClient, args: argparse.Namespace) -> int:
    for run_id in args.run_ids:
        run = client.cancel(run_id)
        if run.status == RunStatus.RUNNING:
            print(f"{run.id}: cancelling; it stops at its next batch boundary")
        else:
            print(f"{run.id}: {run.status.value}")
    return 0


def cmd_export(client: LabClient, args: argparse.Namespace) -> int:
    ids = list(args.run_ids)
    if args.group:
        ids += [r.id for r in client.list_runs(group=args.group, include_archived=True, limit=1000)]
    if not ids:
        raise UsageError("give run ids or --group NAME")
    text = client.export_csv(ids)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {text.count(chr(10)) - 1} rows to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_lesson(client: LabClient, args: argparse.Namespace) -> int:
    keys = args.steps or list(step_keys())
    for key in keys:
        get_step(key)  # an unknown step: one line naming the allowed ones
    records = lesson.candidates(client)
    for i, step in enumerate(steps(), 1):
        if step.key not in keys:
            continue
        found = lesson.step_runs(client, step, records)
        done = sum(r is not None and r.status == RunStatus.COMPLETED for r in found)
        waiting = sum(r is not None and r.status != RunStatus.COMPLETED for r in found)
        queued = lesson.prepare(client, step, records=records) if args.prepare else []
        records = lesson.candidates(client) if queued else records
        missing = len(found) - done - waiting - len(queued)
        print(f"step {i} {step.key} ({step.title}): {len(found)} runs, {done} finished, {waiting} on the way"
              + (f", {len(queued)} queued now" if queued else "") + (f", {missing} missing" if missing else ""))
    if args.prepare and not client.executor_info()["workers_alive"]:
        print("no worker is running; start one with `python -m jobs worker` (or `python -m app`)", file=sys.stderr)
    elif not args.prepare:
        print("`python -m jobs lesson --prepare` queues the missing runs")
    return 0


def _executor_and_slots(client: LabClient, args: argparse.Namespace):
    """The executor named by --executor ($GCE_LAB_EXECUTOR, default local) and its slots."""
    name = config.executor_name(args.executor)
    if name == "ray":
        from jobs.executor_ray import RayExecutor

        executor = RayExecutor(db_url=client.url, address=config.ray_address(args.ray_address))
        return executor, executor.slots(args.slots, cpu_only=args.cpu)
    from jobs.executor_local import LocalExecutor
    from jobs.slots import detect_slots

    return LocalExecutor(db_url=client.url), detect_slots(args.slots, gpus=[] if args.cpu else None)


def cmd_worker(client: LabClient, args: argparse.Namespace) -> int:
    from jobs.executor_ray import RayUnavailable
    from jobs.supervisor import Supervisor

    try:
        executor, slots = _executor_and_slots(client, args)
    except RayUnavailable as exc:
        raise UsageError(str(exc)) from None
    sup = Supervisor(client.store, executor, slots)
    where = ", ".join(s.device for s in slots)
    print(f"worker {sup.id}: {executor.name} executor, {len(slots)} slot(s) ({where}); database {client.url}; "
          f"Ctrl-C stops the runs at a batch boundary and queues them again", flush=True)
    sup.run_forever(poll_s=args.poll, until_idle=args.until_idle)
    print(f"worker {sup.id} stopped", flush=True)
    return 0


# --- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m jobs", description=__doc__.split("\n")[0])
    parser.add_argument("--db", help="SQLAlchemy database URL (default: $GCE_LAB_DB_URL, else the lab home's SQLite file)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="queue a run, or a grid of runs (--losses/--noise-rates/--seeds)")
    add_spec_options(p)
    p.add_argument("--owner", default="local", help="who the run is for (default: local)")
    p.add_argument("--group", help="group name, for comparisons (default: none; a grid gets a new one)")
    p.add_argument("--tag", action="append", help="a tag; repeat for several (default: none)")
    p.add_argument("--losses", type=_csv_list(str), help="grid: comma-separated losses (default: --loss)")
    p.add_argument("--noise-rates", type=_csv_list(float), help="grid: comma-separated rates (default: --noise-rate)")
    p.add_argument("--seeds", type=_csv_list(int), help="grid: comma-separated seeds (default: --seed)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("list", help="list runs, newest first")
    p.add_argument("--status", type=_csv_list(str), help=f"comma-separated, of {', '.join(s.value for s in RunStatus)} (default: all)")
    p.add_argument("--owner", help="only this owner's runs (default: all)")
    p.add_argument("--group", help="only this group (default: all)")
    p.add_argument("--tag", help="only runs with this tag (default: all)")
    p.add_argument("--all", action="store_true", help="include archived runs (default: no)")
    p.add_argument("--limit", type=int, default=50, help="runs per page, 1 to 1000 (default: 50)")
    p.add_argument("--offset", type=int, default=0, help="skip this many (default: 0)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="one run: state, result, error, spec and the end of its log")
    p.add_argument("run_id")
    p.add_argument("--lines", type=int, default=10, help="log lines to show (default: 10)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("logs", help="a run's log (its process's output, every attempt)")
    p.add_argument("run_id")
    p.add_argument("-n", "--lines", type=int, default=0, help="only the last N lines (default: 0 = all)")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("cancel", help="cancel runs: waiting ones at once, running ones at the next batch")
    p.add_argument("run_ids", nargs="+")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("export", help="metrics as long CSV: run_id, name, epoch, metric, value")
    p.add_argument("run_ids", nargs="*")
    p.add_argument("--group", help="add every run of this group (default: none)")
    p.add_argument("-o", "--out", help="write to this file (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("lesson", help="the guided lesson's runs: which the store has; --prepare queues the missing ones")
    p.add_argument("steps", nargs="*", help="step keys (default: all): " + ", ".join(step_keys()))
    p.add_argument("--prepare", action="store_true", help="queue the missing runs, so a class never waits (default: only list)")
    p.set_defaults(func=cmd_lesson)

    p = sub.add_parser("worker", help="run the supervisor: claims queued runs, one per slot")
    p.add_argument("--slots", type=int, default=None,
                   help="runs at once on a CPU machine (default: $GCE_LAB_SLOTS, else half the cores, at least 3); "
                        "with GPUs, one slot per GPU")
    p.add_argument("--cpu", action="store_true", help="use CPU slots even if GPUs are visible (default: no)")
    p.add_argument("--executor", choices=config.EXECUTORS, default=None,
                   help="where runs go: local (a process per run on this machine) or ray (a Ray task per "
                        "run on a Ray cluster) (default: $GCE_LAB_EXECUTOR, else local)")
    p.add_argument("--ray-address", default=None,
                   help="the Ray cluster, HOST:PORT of its head (default: $GCE_LAB_RAY_ADDRESS, else Ray's "
                        "own: $RAY_ADDRESS or a Ray started for this worker); with --executor ray, --slots "
                        "defaults to the cluster's GPUs, else its CPUs")
    p.add_argument("--poll", type=float, default=0.05,
                   help="seconds between supervisor steps (default: 0.05; an idle step is one read of the queue)")
    p.add_argument("--until-idle", action="store_true", help="exit once no run is waiting or running (default: no)")
    p.set_defaults(func=cmd_worker)

    from jobs.grid import add_grid_parser  # the paper's grid: jobs/grid.py

    add_grid_parser(sub, add_spec_options)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        client = LabClient(args.db)
        return args.func(client, args)
    except RunNotFound as exc:
        print(error_line(exc), file=sys.stderr)
        return USAGE_ERROR
    except (SpecError, UsageError, ValueError) as exc:
        print(error_line(exc), file=sys.stderr)
        return USAGE_ERROR
    except StoreUnavailable as exc:  # the database's disk is full, read-only, ...: not the input's fault
        print(error_line(exc), file=sys.stderr)
        return STORE_ERROR
