"""LabClient: what the dashboard (and the CLI) do with runs. Submitting never trains; a
supervisor (`python -m jobs worker`) picks the run up.

Errors: SubmitRefused (a ValueError; ``.problems`` lists (field, message)) when a submission is
refused, nothing queued (a database that cannot be written, e.g. its disk full, is a refusal too);
RunNotFound (a KeyError) for an unknown id; RunActive (a ValueError) when deleting a running run;
ValueError for bad arguments (tags, filters, pages); StoreUnavailable (jobs.db) when the database
cannot be used at all. A refusal quotes at most ~100 characters of a bad value.
"""

from __future__ import annotations

import csv
import functools
import io
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gce_core.data import DATASETS
from gce_core.messages import clip, quote
from gce_core.metrics import EPOCH_KEYS, LIST_KEYS
from gce_core.spec import RunSpec, SpecError, parse_spec
from jobs import config
from jobs.config import Limits, SupervisorSettings
from jobs.db import StoreUnavailable
from jobs.records import RunRecord
from jobs.registry import WorkerInfo
from jobs.status import RunStatus
from jobs.store import NewRun, QueueFull, RunActive, RunFilter, Store, new_run_id, to_datetime

if TYPE_CHECKING:
    import pandas

__all__ = ["LabClient", "RunActive", "RunNotFound", "StoreUnavailable", "SubmitRefused"]

MAX_TAG_CHARS = 40
MAX_TAGS = 20
MAX_OWNER_CHARS = 100
MAX_GROUP_CHARS = 200
MAX_PAGE = 1000
SPEC_COLUMNS = ("loss", "q", "noise", "noise_rate", "seed", "dataset")


class SubmitRefused(ValueError):
    """A submission was refused and nothing was queued. str() says what is wrong and what to do;
    ``problems`` holds (field, message) pairs, like SpecError's."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        self.problems = list(problems)
        super().__init__(message)


class RunNotFound(KeyError):
    def __init__(self, run_id: str):
        self.run_id = run_id
        super().__init__(run_id)

    def __str__(self) -> str:
        return f"no run with id {quote(self.run_id)}; `python -m jobs list` shows the runs"


def _printable(text: str) -> bool:
    """Printable (no control, format or lone surrogate characters) and encodable as UTF-8."""
    return text.isprintable()  # a lone surrogate is category Cs: not printable


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def check_tags(tags: Sequence[str] | str | None) -> tuple[str, ...]:
    """Tags as stored: stripped, de-duplicated, each 1-40 printable characters, at most 20.
    None is no tags."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = (tags,)
    if not isinstance(tags, (list, tuple, set, frozenset)):
        raise ValueError(f"tags must be a list of text, got {type(tags).__name__} {quote(tags)}")
    if len(tags) > 10 * MAX_TAGS:
        raise ValueError(f"{len(tags)} tags; a run may have at most {MAX_TAGS}")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise ValueError(f"a tag must be text, got {type(tag).__name__} {quote(tag)}")
        tag = tag.strip()
        if not tag or len(tag) > MAX_TAG_CHARS or not _printable(tag):
            raise ValueError(f"tag {quote(tag)}: a tag is 1 to {MAX_TAG_CHARS} printable characters "
                             "(no control or invisible characters)")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ValueError(f"{len(out)} tags; a run may have at most {MAX_TAGS}")
    return tuple(out)


def _check_name(kind: str, value: str | None, max_chars: int, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > max_chars or not _printable(value.strip()):
        raise SubmitRefused(f"refused, nothing was queued: {kind} must be 1 to {max_chars} printable characters "
                            f"(no control or invisible characters), got {quote(value)}", [(kind, "invalid")])
    return value.strip()


def _refusal(problems: list[tuple[str, str]]) -> SubmitRefused:
    problems = [(clip(f, 100), clip(m, 400)) for f, m in problems[:20]] + (
        [("spec", f"and {len(problems) - 20} more problems")] if len(problems) > 20 else [])
    text = "; ".join(f"{f}: {m}" for f, m in problems)
    return SubmitRefused(f"refused, nothing was queued: {text}", problems)


def _store_refusal(exc: StoreUnavailable) -> SubmitRefused:
    return SubmitRefused(f"refused, nothing was queued: {exc}", [("database", str(exc))])


def _numbers(kind: str, values, cast) -> list:
    """A grid axis as a list of ``cast`` values; SubmitRefused naming it otherwise."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise SubmitRefused(f"refused, nothing was queued: {kind} must be a list, got {quote(values)}", [(kind, "not a list")])
    out = []
    for v in values:
        ok = isinstance(v, str) if cast is str else (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      and (cast is float or float(v).is_integer()))
        if not ok or (cast is float and v != v):
            raise SubmitRefused(f"refused, nothing was queued: {kind} holds {quote(v)}, not a {cast.__name__}",
                                [(kind, f"not a {cast.__name__}")])
        out.append(cast(v))
    return out


def _check_page(limit, offset) -> None:
    for name, v in (("limit", limit), ("offset", offset)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError(f"{name} must be a whole number, got {quote(v)}")
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise ValueError(f"limit must be 1 to {MAX_PAGE} and offset >= 0, got {limit} and {offset}")


def _check_id(run_id) -> str:
    if not isinstance(run_id, str) or not _encodable(run_id):
        raise RunNotFound(run_id)
    return run_id


def runnable_problems(spec: RunSpec, workers: Callable[[], list[WorkerInfo]]) -> list[tuple[str, str]]:
    """What keeps ``spec`` from running on the lab's machines, as (field, message) pairs; the
    running supervisors (``workers()``, asked only when needed) say which GPUs and data sets they
    have. With no supervisor running nothing is known, and nothing is refused but a device no run
    process ever has: each sees its own slot's GPU alone, as cuda:0."""
    problems = []
    device = spec.device
    if device.startswith("cuda:") and device != "cuda:0":
        problems.append(("device", f"{device}: every run process of the lab sees its own slot's GPU alone, as "
                         "cuda:0; submit with device auto (or cuda)"))
    elif device.startswith("cuda"):
        alive = workers()
        slots = sorted({d for w in alive for d in w.devices})
        if alive and slots and all(d == "cpu" for d in slots):
            problems.append(("device", f"{device}: no running worker has a GPU (their slots are all cpu); "
                             "submit with device auto or cpu"))
    info = DATASETS.get(spec.dataset)  # None: the user's own, found in the data folder at validation
    if info is not None and spec.data_root is None and not spec.download and not info.embedded:
        alive = workers()
        if alive and all(w.datasets is not None for w in alive) and not any(
                spec.dataset in w.datasets.get("present", ()) for w in alive):
            roots = ", ".join(sorted({f"{w.host}:{w.datasets.get('root')}" for w in alive}))
            problems.append(("dataset", f"{spec.dataset} is not in the data folder of any running worker "
                             f"({clip(roots, 300)}). {info.how_to_get}"))
    return problems


class LabClient:
    """The lab's runs in the database at ``url`` (None: $GCE_LAB_DB_URL or the lab home's SQLite
    file). Creates or upgrades the schema. Safe to share between threads."""

    def __init__(self, url: str | None = None, *, limits: Limits | None = None):
        self.store = Store(url)
        self.limits = limits or Limits.from_env()

    @property
    def url(self) -> str:
        return self.store.url

    def close(self) -> None:
        self.store.close()

    # --- submitting ---------------------------------------------------------------------------
    def _validate(self, specs: Sequence[RunSpec | dict]) -> list[RunSpec]:
        if isinstance(specs, (str, bytes, dict)) or not isinstance(specs, Sequence):
            raise _refusal([("specs", f"a list of specs is needed, got {type(specs).__name__}")])
        problems: list[tuple[str, str]] = []
        parsed: list[RunSpec] = []
        workers = functools.cache(self._workers_alive)  # read once, if a spec needs them
        many = len(specs) > 1
        for i, raw in enumerate(specs):
            prefix = f"runs[{i}]." if many else ""
            try:
                spec = parse_spec(raw)
            except SpecError as exc:
                problems += [(prefix + f, m) for f, m in exc.problems]
                continue
            problems += [(prefix + f, m) for f, m in runnable_problems(spec, workers)]
            if spec.epochs > self.limits.max_epochs:
                problems.append((prefix + "epochs", (
                    f"{spec.epochs} is over this lab's limit of {self.limits.max_epochs} epochs per run; "
                    f"ask for fewer, or raise {Limits.ENV['max_epochs']}")))
            parsed.append(spec)
        if problems:
            raise _refusal(problems)
        return parsed

    def _queue(self, specs: list[RunSpec], owner: str, group: str | None, tags) -> list[str]:
        owner = _check_name("owner", owner, MAX_OWNER_CHARS, optional=False)
        group = _check_name("group", group, MAX_GROUP_CHARS, optional=True)
        try:
            tags = check_tags(tags)
        except ValueError as exc:
            raise SubmitRefused(str(exc), [("tags", str(exc))]) from None
        new = [NewRun(new_run_id(), spec, owner, group, tags) for spec in specs]
        try:
            self.store.insert_runs(new, now=time.time(), max_queued_per_owner=self.limits.max_queued_per_owner)
        except StoreUnavailable as exc:
            raise _store_refusal(exc) from None
        except QueueFull as exc:
            raise SubmitRefused(
                f"refused, nothing was queued: {owner!r} already has {exc.queued} queued runs and the "
                f"limit is {exc.limit} ({Limits.ENV['max_queued_per_owner']}); {exc.adding} more would "
                "pass it. Wait for some to run, cancel some, or raise the limit.",
                [("owner", f"over the limit of {exc.limit} queued runs")]) from None
        return [n.id for n in new]

    def submit(self, spec: RunSpec | dict, *, owner: str = "local", group: str | None = None,
               tags: Sequence[str] = ()) -> str:
        """Queue one run; its id."""
        return self._queue(self._validate([spec]), owner, group, tags)[0]

    def _workers_alive(self) -> list[WorkerInfo]:
        """The live supervisors."""
        try:
            now, stale = time.time(), SupervisorSettings.from_env().stale_after_s
            return [w for w in self.store.workers.all() if now - w.heartbeat_at <= stale]
        except StoreUnavailable as exc:
            raise _store_refusal(exc) from None

    def submit_group(self, specs: Sequence[RunSpec | dict], *, owner: str = "local",
                     group: str | None = None, tags: Sequence[str] = ()) -> tuple[str, list[str]]:
        """Queue all of ``specs`` under one group, or none; (group, ids in the order given).
        group None -> a new name like 'group-20250101-120000-ab12'."""
        if isinstance(specs, (str, bytes, dict)) or not isinstance(specs, Sequence):
            raise _refusal([("specs", f"a list of specs is needed, got {type(specs).__name__}")])
        if not specs:
            raise SubmitRefused("refused: a group needs at least one spec", [("specs", "empty")])
        if len(specs) > self.limits.max_group_size:
            raise SubmitRefused(
                f"refused, nothing was queued: {len(specs)} runs in one group is over the limit of "
                f"{self.limits.max_group_size} ({Limits.ENV['max_group_size']}); submit fewer at once",
                [("specs", f"more than {self.limits.max_group_size} runs")])
        parsed = self._validate(specs)
        group = group if group is not None else f"group-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        return group, self._queue(parsed, owner, group, tags)

    def submit_grid(self, base: RunSpec | dict, *, losses: Sequence[str], noise_rates: Sequence[float],
                    seeds: Sequence[int], owner: str = "local", group: str | None = None,
                    tags: Sequence[str] = ()) -> tuple[str, list[str]]:
        """Queue base x losses x noise_rates x seeds (in that nesting order) as one group."""
        base = self._validate([base])[0]
        losses, noise_rates = _numbers("losses", losses, str), _numbers("noise_rates", noise_rates, float)
        seeds = _numbers("seeds", seeds, int)
        if not losses or not noise_rates or not seeds:
            raise SubmitRefused("refused: a grid needs at least one loss, one noise rate and one seed",
                                [("grid", "an empty axis")])
        if base.noise == "none" and any(r != 0 for r in noise_rates):
            raise SubmitRefused(
                "refused: the base spec has noise 'none', which ignores the noise rate; set its noise "
                "kind (e.g. uniform) for a grid over noise rates", [("noise", "'none' with noise rates")])
        specs = []
        for i, loss in enumerate(losses):
            try:
                of_loss = base.with_loss(loss)
            except SpecError as exc:  # named like submit_group's problems: the first run of that loss
                first = i * len(noise_rates) * len(seeds)
                raise _refusal([(f"runs[{first}].{field}", msg) for field, msg in exc.problems]) from None
            for rate in noise_rates:
                for seed in seeds:
                    name = f"{base.name} [{loss}, {rate:g}, seed {seed}]" if base.name else ""
                    specs.append({**of_loss.to_dict(), "noise_rate": rate, "seed": seed, "name": name})
        return self.submit_group(specs, owner=owner, group=group, tags=tags)

    # --- reading ------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        run = self.store.get(_check_id(run_id))
        if run is None:
            raise RunNotFound(run_id)
        return run

    @staticmethod
    def _filter(status, owner, group, tag, include_archived) -> RunFilter:
        for name, v in (("owner", owner), ("group", group), ("tag", tag)):
            if v is not None and not (isinstance(v, str) and _encodable(v)):
                raise ValueError(f"{name} must be text, got {type(v).__name__} {quote(v)}")
        if status is not None:
            if not isinstance(status, (str, list, tuple, set, frozenset)):
                raise ValueError(f"status must be a status or a list of them, got {type(status).__name__} {quote(status)}")
            status = (status,) if isinstance(status, str) else tuple(status)
            status = tuple(RunStatus.parse(s) for s in status)
        return RunFilter(status=status, owner=owner, group=group, tag=tag, include_archived=include_archived)

    def list_runs(self, *, status: Sequence[RunStatus | str] | RunStatus | str | None = None,
                  owner: str | None = None, group: str | None = None, tag: str | None = None,
                  include_archived: bool = False, limit: int = 100, offset: int = 0) -> list[RunRecord]:
        """Runs matching every filter given, newest first; ``limit`` 1 to 1000."""
        _check_page(limit, offset)
        f = self._filter(status, owner, group, tag, include_archived)
        return self.store.list_runs(f, limit=limit, offset=offset)

    def count_runs(self, *, status=None, owner=None, group=None, tag=None, include_archived=False) -> int:
        return self.store.count_runs(self._filter(status, owner, group, tag, include_archived))

    def groups(self, *, include_archived: bool = False) -> list[str]:
        """Group names, most recently submitted first."""
        return self.store.groups(include_archived=include_archived)

    def metrics(self, run_id: str, since_epoch: int = 0) -> list[dict]:
        """The run's epoch rows (gce_core's on_epoch dicts) with epoch > since_epoch, in order."""
        self.get(run_id)
        if not isinstance(since_epoch, int) or isinstance(since_epoch, bool):
            raise ValueError(f"since_epoch must be a whole number, got {quote(since_epoch)}")
        return self.store.metrics(run_id, since_epoch)

    def _runs_and_rows(self, run_ids: Sequence[str]) -> list[tuple[RunRecord, list[dict]]]:
        if isinstance(run_ids, str) or not isinstance(run_ids, Sequence):
            raise ValueError(f"run ids must be a list of ids, got {type(run_ids).__name__} {quote(run_ids)}")
        ids = list(dict.fromkeys(_check_id(i) for i in run_ids))
        found = self.store.get_many(ids)
        for run_id in ids:
            if run_id not in found:
                raise RunNotFound(run_id)
        rows = self.store.metrics_of(ids)
        return [(found[i], rows[i]) for i in ids]

    def metrics_frame(self, run_ids: Sequence[str]) -> pandas.DataFrame:
        """One row per (run, epoch): run_id, name, group, epoch, every scalar metric, and the
        spec's loss, q, noise, noise_rate, seed, dataset."""
        import pandas as pd

        scalar = [k for k in EPOCH_KEYS if k not in LIST_KEYS]
        columns = ["run_id", "name", "group", *scalar, *SPEC_COLUMNS]
        records = []
        for run, rows in self._runs_and_rows(run_ids):
            spec = {c: getattr(run.spec, c) for c in SPEC_COLUMNS}
            for row in rows:
                records.append({"run_id": run.id, "name": run.name, "group": run.group,
                                **{k: row.get(k) for k in scalar}, **spec})
        return pd.DataFrame.from_records(records, columns=columns)

    def export_csv(self, run_ids: Sequence[str]) -> str:
        """Long format: run_id, name, epoch, metric, value (scalar metrics; empty ones left out)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["run_id", "name", "epoch", "metric", "value"])
        for run, rows in self._runs_and_rows(run_ids):
            for row in rows:
                for key, value in row.items():
                    if key == "epoch" or value is None or isinstance(value, (list, dict)):
                        continue
                    writer.writerow([run.id, run.name, row["epoch"], key, value])
        return out.getvalue()

    # --- changing -----------------------------------------------------------------------------
    def cancel(self, run_id: str) -> RunRecord:
        """A waiting run is cancelled at once; a running one stops at its next batch boundary
        (its supervisor escalates to SIGTERM, then SIGKILL, if it does not). Final runs stay."""
        run = self.store.request_cancel(_check_id(run_id), now=time.time())
        if run is None:
            raise RunNotFound(run_id)
        return run

    def tag(self, run_id: str, tags: Sequence[str]) -> RunRecord:
        """Replace the run's tags."""
        if not self.store.set_tags(_check_id(run_id), check_tags(tags)):
            raise RunNotFound(run_id)
        return self.get(run_id)

    def archive(self, run_id: str, archived: bool = True) -> RunRecord:
        """Hide (or unhide) a run from lists; nothing is deleted."""
        if not self.store.set_archived(_check_id(run_id), bool(archived)):
            raise RunNotFound(run_id)
        return self.get(run_id)

    def delete(self, run_id: str) -> None:
        """Remove the run, its metrics and its folder (checkpoint, log). RunActive if running."""
        if not self.store.delete_run(_check_id(run_id)):
            raise RunNotFound(run_id)
        shutil.rmtree(config.run_dir(run_id), ignore_errors=True)

    def executor_info(self) -> dict[str, Any]:
        """Where runs go: {"executor", "slots", "devices", "workers_alive", "workers": [...]},
        from the supervisors' heartbeats in the database."""
        now = time.time()
        stale = SupervisorSettings.from_env().stale_after_s
        alive = [w for w in self.store.workers.all() if now - w.heartbeat_at <= stale]
        return {
            "executor": ", ".join(sorted({w.executor for w in alive})) or "local",
            "slots": sum(w.slots for w in alive),
            "devices": [d for w in alive for d in w.devices],
            "workers_alive": len(alive),
            "workers": [{"id": w.id, "host": w.host, "pid": w.pid, "slots": w.slots,
                         "devices": list(w.devices), "started_at": to_datetime(w.started_at),
                         "heartbeat_age_s": now - w.heartbeat_at} for w in alive],
        }
