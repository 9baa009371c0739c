"""LabClient: what the dashboard (and the CLI) do with runs. Submitting never trains; a
supervisor (`python -m jobs worker`) picks the run up.

Errors: SubmitRefused (a ValueError; ``.problems`` lists (field, message)) when a submission is
refused, nothing queued; RunNotFound (a KeyError) for an unknown id; RunActive (a ValueError) when
deleting a running run; ValueError for bad arguments (tags, filters).
"""

from __future__ import annotations

import csv
import io
import shutil
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gce_core.metrics import EPOCH_KEYS
from gce_core.spec import RunSpec, SpecError, parse_spec
from jobs import config
from jobs.config import Limits, SupervisorSettings
from jobs.records import RunRecord
from jobs.status import RunStatus
from jobs.store import NewRun, QueueFull, RunActive, RunFilter, Store, new_run_id, to_datetime

if TYPE_CHECKING:
    import pandas

__all__ = ["LabClient", "RunActive", "RunNotFound", "SubmitRefused"]

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
        return f"no run with id {self.run_id!r}; `python -m jobs list` shows the runs"


def check_tags(tags: Sequence[str] | str) -> tuple[str, ...]:
    """Tags as stored: stripped, de-duplicated, each 1-40 printable characters, at most 20."""
    if isinstance(tags, str):
        tags = (tags,)
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise ValueError(f"a tag must be text, got {type(tag).__name__} {tag!r}")
        tag = tag.strip()
        if not tag or len(tag) > MAX_TAG_CHARS or not tag.isprintable():
            raise ValueError(f"tag {tag!r}: a tag is 1 to {MAX_TAG_CHARS} printable characters")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ValueError(f"{len(out)} tags; a run may have at most {MAX_TAGS}")
    return tuple(out)


def _check_name(kind: str, value: str | None, max_chars: int, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > max_chars:
        raise SubmitRefused(f"{kind} must be 1 to {max_chars} characters, got {value!r}", [(kind, "invalid")])
    return value.strip()


def _refusal(problems: list[tuple[str, str]]) -> SubmitRefused:
    text = "; ".join(f"{f}: {m}" for f, m in problems)
    return SubmitRefused(f"refused, nothing was queued: {text}", problems)


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
        problems: list[tuple[str, str]] = []
        parsed: list[RunSpec] = []
        many = len(specs) > 1
        for i, raw in enumerate(specs):
            prefix = f"runs[{i}]." if many else ""
            try:
                spec = parse_spec(raw)
            except SpecError as exc:
                problems += [(prefix + f, m) for f, m in exc.problems]
                continue
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

    def submit_group(self, specs: Sequence[RunSpec | dict], *, owner: str = "local",
                     group: str | None = None, tags: Sequence[str] = ()) -> tuple[str, list[str]]:
        """Queue all of ``specs`` under one group, or none; (group, ids in the order given).
        group None -> a new name like 'group-20250101-120000-ab12'."""
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
        run = self.store.get(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    @staticmethod
    def _filter(status, owner, group, tag, include_archived) -> RunFilter:
        if status is not None:
            status = (status,) if isinstance(status, str) else tuple(status)
            status = tuple(RunStatus.parse(s) for s in status)
        return RunFilter(status=status, owner=owner, group=group, tag=tag, include_archived=include_archived)

    def list_runs(self, *, status: Sequence[RunStatus | str] | RunStatus | str | None = None,
                  owner: str | None = None, group: str | None = None, tag: str | None = None,
                  include_archived: bool = False, limit: int = 100, offset: int = 0) -> list[RunRecord]:
        """Runs matching every filter given, newest first; ``limit`` 1 to 1000."""
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise ValueError(f"limit must be 1 to {MAX_PAGE} and offset >= 0, got {limit} and {offset}")
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
        return self.store.metrics(run_id, since_epoch)

    def _runs_and_rows(self, run_ids: Sequence[str]) -> list[tuple[RunRecord, list[dict]]]:
        ids = list(dict.fromkeys(run_ids))
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

        scalar = [k for k in EPOCH_KEYS if not k.startswith("fy_hist")]
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
        run = self.store.request_cancel(run_id, now=time.time())
        if run is None:
            raise RunNotFound(run_id)
        return run

    def tag(self, run_id: str, tags: Sequence[str]) -> RunRecord:
        """Replace the run's tags."""
        if not self.store.set_tags(run_id, check_tags(tags)):
            raise RunNotFound(run_id)
        return self.get(run_id)

    def archive(self, run_id: str, archived: bool = True) -> RunRecord:
        """Hide (or unhide) a run from lists; nothing is deleted."""
        if not self.store.set_archived(run_id, bool(archived)):
            raise RunNotFound(run_id)
        return self.get(run_id)

    def delete(self, run_id: str) -> None:
        """Remove the run, its metrics and its folder (checkpoint, log). RunActive if running."""
        if not self.store.delete_run(run_id):
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
