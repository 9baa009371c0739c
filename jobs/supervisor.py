"""The supervisor (`python -m jobs worker`): claims queued runs, one run per slot at a time,
starts each through an executor, watches it, and decides what happens when its process ends.

A run is claimed by one rule, the oldest waiting run first (``Store.claim``). Before each claim the
executor prepares every free slot (the local executor keeps a warm run process there, so a claimed
run starts training at once).

All the logic is in ``tick(now)``, one step that tests drive without sleeping; ``run_forever`` only
calls it in a loop. Signal handlers only set flags: the first SIGINT/SIGTERM stops claiming and
asks every run to stop at a batch boundary (they go back to queued and later resume from their
checkpoints); a second one, or the kill grace running out, kills them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError

from jobs import config
from jobs.config import SupervisorSettings
from jobs.db import StoreUnavailable
from jobs.executor import EXIT_STORAGE, Executor, ExitInfo, RunHandle, Slot
from jobs.outcome import decide, storage_backoff
from jobs.procs import pid_alive
from jobs.records import RunRecord
from jobs.registry import WorkerInfo, data_folder_report
from jobs.status import RunStatus
from jobs.storage import diagnose, is_storage_fault, storage_fault_text
from jobs.store import Store


@dataclass
class Active:
    """A run this supervisor watches (runs of one process share ``handle`` and ``slot``)."""

    run_id: str
    token: str
    handle: RunHandle
    slot: Slot | None
    adopted: bool = False
    cancel_seen: float | None = None
    term_sent: float | None = None
    kill_sent: float | None = None
    forced: str | None = None  # why the supervisor killed it


@dataclass
class TickReport:
    started: list[str] = field(default_factory=list)
    ended: list[tuple[str, RunStatus]] = field(default_factory=list)  # reaped, and what they became
    adopted: list[str] = field(default_factory=list)
    recovered: list[tuple[str, RunStatus]] = field(default_factory=list)  # orphans dealt with
    queue_empty: bool = False


def _ts(dt) -> float | None:
    return None if dt is None else dt.timestamp()


class Supervisor:
    def __init__(self, store: Store, executor: Executor, slots: Sequence[Slot],
                 settings: SupervisorSettings | None = None, *, worker_id: str | None = None):
        if not slots:
            raise ValueError("a supervisor needs at least one slot")
        self.store, self.executor, self.slots = store, executor, list(slots)
        self.settings = settings or SupervisorSettings.from_env()
        # at most 64 characters (the column's width, enforced by PostgreSQL): long host names are cut
        self.id = worker_id or f"{executor.host[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.active: dict[str, Active] = {}
        self._registered = False
        self._last_beat = float("-inf")
        self._next_recover = float("-inf")
        self._stop_requested = False
        self._force = False
        self._stop_since: float | None = None
        # after a storage fault: no claims before then (the lab home is this machine's)
        self.paused_until = float("-inf")
        self.pause_reason: str | None = None
        self._slot_faults = 0  # storage faults in a row starting run processes

    # --- flags (safe from a signal handler) -------------------------------------------------------
    def request_stop(self, *, force: bool = False) -> None:
        self._force = self._force or force or self._stop_requested
        self._stop_requested = True

    def _on_signal(self, _signum, _frame) -> None:
        self.request_stop()

    @property
    def stopping(self) -> bool:
        return self._stop_requested

    @property
    def child_env(self) -> dict[str, str]:
        """Settings the training processes read (jobs.worker_process)."""
        s, env = self.settings, SupervisorSettings.ENV
        return {env["heartbeat_s"]: str(s.heartbeat_s), env["cancel_poll_s"]: str(s.cancel_poll_s)}

    # --- the loop -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.store.workers.register(WorkerInfo(
            id=self.id, host=self.executor.host, pid=os.getpid(), executor=self.executor.name,
            slots=len(self.slots), devices=tuple(s.device for s in self.slots),
            started_at=now, heartbeat_at=now,
            datasets=data_folder_report() if self.executor.name == "local" else None))
        self._registered = True
        self._last_beat = now

    def close(self) -> None:
        """Leave the registry and let the executor go. Runs still active keep running; a next
        supervisor adopts them."""
        self.executor.close()
        if self._registered:
            self.store.workers.remove(self.id)
            self._registered = False

    def tick(self, now: float) -> TickReport:
        """One step: heartbeat, reap ended processes, enforce cancels and heartbeats, recover
        orphaned runs, fill free slots (or, when stopping, stop the runs)."""
        report = TickReport()
        if not self._registered:
            self.start(now)
        if now - self._last_beat >= self.settings.heartbeat_s:
            self.store.workers.heartbeat(self.id, now=now)
            self._last_beat = now
        self._reap(now, report)
        if self._stop_requested:
            self._stop_runs(now)
            return report
        if self.active:
            self._watch(now)
        if now >= self._next_recover:
            self._recover(now, report)
            self._next_recover = now + self.settings.recover_every_s
        self._fill(now, report)
        return report

    def run_forever(self, *, poll_s: float = 0.05, until_idle: bool = False) -> None:
        """Tick until stopped by SIGINT/SIGTERM (or, with until_idle, until nothing is left)."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            said, wait = None, 1.0
            while True:
                try:
                    report = self.tick(time.time())
                except (OperationalError, StoreUnavailable) as exc:  # database out of reach: retry
                    text = str(exc).splitlines()[0]
                    if text != said:  # once per new problem, not every second
                        print(f"supervisor: database error, retrying with back-off: {text}", file=sys.stderr, flush=True)
                        said = text
                    time.sleep(max(poll_s, wait))
                    wait = min(10.0, wait * 2)
                    continue
                if said is not None:
                    print("supervisor: the database is back", file=sys.stderr, flush=True)
                    said, wait = None, 1.0
                if self._stop_requested and not self.active:
                    break
                if until_idle and report.queue_empty and not self.active:
                    break
                time.sleep(poll_s)
        finally:
            self.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # --- steps ----------------------------------------------------------------------------------
    def _reap(self, now: float, report: TickReport) -> None:
        for run_id, act in list(self.active.items()):
            how = act.handle.poll()
            if how is None:
                continue
            status = self._conclude(run_id, act.token, how, now, forced=act.forced)
            del self.active[run_id]  # only once concluded: a database error retries next step
            report.ended.append((run_id, status))

    def _conclude(self, run_id: str, token: str, how: ExitInfo, now: float, *,
                  forced: str | None = None) -> RunStatus | None:
        """Write what becomes of a run whose process ended; its status afterwards."""
        run = self.store.get(run_id)
        if run is None:
            return None
        if run.status != RunStatus.RUNNING or run.claim_token != token:
            return run.status  # the process wrote its own end (completed, cancelled) or lost the run
        s = self.settings
        note = None
        if how.code == EXIT_STORAGE:
            note = diagnose(config.run_dir(run_id, getattr(self.executor, "home", None)))
        out = decide(run, how, forced=forced, stopping=self._stop_requested, max_retries=s.max_retries,
                     log_tail=self.executor.log_tail(run_id), storage_note=note,
                     storage_retry_s=s.storage_retry_s, storage_retry_max_s=s.storage_retry_max_s)
        self.executor.note(run_id, f"supervisor: {out.reason} -> {out.status.value}")
        not_before = None if out.retry_in is None else now + out.retry_in
        self.store.finish(run_id, token, out.status, now=now, error=out.error, crashed=out.crashed,
                          storage_fault=out.storage_fault, not_before=not_before)
        if not_before is not None:
            self._pause(now, not_before, out.reason)
        return out.status

    def _pause(self, now: float, until: float, reason: str) -> None:
        """Claim nothing before ``until``: storage here failed a run (its disk is full, or it is
        read-only), so the next run would fail the same way."""
        if until > self.paused_until:
            self.paused_until, self.pause_reason = until, reason
            print(f"supervisor: no new runs for {until - now:.1f} s: {reason}", file=sys.stderr, flush=True)

    def _watch(self, now: float) -> None:
        """Escalate cancels that were not honoured; kill processes whose heartbeat went stale."""
        s = self.settings
        runs = {r.id: r for r in self.store.running(worker_id=self.id)}
        for run_id, act in self.active.items():
            run = runs.get(run_id)
            if run is None or run.claim_token != act.token or act.kill_sent is not None:
                continue
            if run.cancel_requested:
                if act.cancel_seen is None:
                    act.cancel_seen = now
                elif act.term_sent is None and now - act.cancel_seen >= s.cancel_grace_s:
                    act.handle.terminate()
                    act.term_sent = now
                elif act.term_sent is not None and now - act.term_sent >= s.kill_grace_s:
                    late = f"did not stop within {s.cancel_grace_s + s.kill_grace_s:g} s of the cancel"
                    self._kill(act, now, f"it {late}; killed")
                continue
            beat = _ts(run.heartbeat_at)
            if beat is not None and now - beat > s.stale_after_s:
                self._kill(act, now, f"no heartbeat for {now - beat:.0f} s; the supervisor killed its process")

    def _kill(self, act: Active, now: float, reason: str) -> None:
        """SIGKILL act's process (it trains act's run alone); the run records why."""
        act.handle.kill()
        act.forced, act.kill_sent = reason, now

    def _stop_runs(self, now: float) -> None:
        """Shutting down: SIGTERM every run (it stops at a batch boundary and is queued again);
        SIGKILL what is left after the kill grace, or at once on a second signal."""
        if self._stop_since is None:
            self._stop_since = now
            for act in self.active.values():
                act.handle.terminate()
                act.term_sent = now
        if self._force or now - self._stop_since >= self.settings.kill_grace_s:
            for act in self.active.values():
                if act.kill_sent is None:
                    self._kill(act, now, "it did not stop in time for the supervisor's shutdown; killed")

    def _free_slots(self) -> list[Slot]:
        used = {a.slot.index for a in self.active.values() if a.slot is not None}
        return [s for s in self.slots if s.index not in used]

    def _fill(self, now: float, report: TickReport) -> None:
        if now < self.paused_until:  # backing off after a storage fault
            return
        # Only a slot whose executor is ready takes a run (a warm run process that has warmed up):
        # a claimed run starts training at once, and its heartbeat never waits on a start-up.
        try:
            ready = [slot for slot in self._free_slots() if self.executor.prepare(slot, self.child_env)]
        except OSError as exc:  # a run process's log cannot be made: the lab home is full or read-only
            if not is_storage_fault(exc):
                raise
            self._slot_faults += 1
            wait = storage_backoff(self._slot_faults, self.settings.storage_retry_s, self.settings.storage_retry_max_s)
            self._pause(now, now + wait, f"storage fault starting a run process: {storage_fault_text(exc)}")
            return
        self._slot_faults = 0
        for slot in ready:
            if not self.store.has_waiting(now):  # a read: no write transaction while the queue is empty
                report.queue_empty = True
                return
            run = self.store.claim(worker_id=self.id, host=self.executor.host, device=slot.device, now=now)
            if run is None:
                report.queue_empty = True
                return
            try:
                handle = self.executor.start(run, run.claim_token, slot, self.child_env)
            except Exception as exc:  # this machine's problem, not the run's: counted, retried
                if is_storage_fault(exc):
                    self._conclude(run.id, run.claim_token, ExitInfo(EXIT_STORAGE, storage_fault_text(exc)), now)
                else:
                    self._conclude(run.id, run.claim_token, ExitInfo(None), now,
                                   forced=f"its process could not start: {exc}")
                return
            if handle.pid is not None:
                self.store.set_pid(run.id, run.claim_token, handle.pid)
            self.active[run.id] = Active(run.id, run.claim_token, handle, slot)
            report.started.append(run.id)

    # --- orphans: runs whose supervisor is gone ------------------------------------------------------
    def _worker_alive(self, w: WorkerInfo, now: float) -> bool:
        if w.id == self.id:
            return True
        if now - w.heartbeat_at > self.settings.stale_after_s:
            return False
        return w.host != self.executor.host or pid_alive(w.pid)

    def _recover(self, now: float, report: TickReport) -> None:
        workers = self.store.workers.all()
        alive = {w.id for w in workers if self._worker_alive(w, now)}
        for w in workers:
            if w.id not in alive and (w.host == self.executor.host or now - w.heartbeat_at > 10 * self.settings.stale_after_s):
                self.store.workers.remove(w.id)
        for run in self.store.running():
            if run.id in self.active or (run.worker_id in alive and run.worker_id != self.id):
                continue  # watched by us, or by a live colleague; ours but unwatched is an orphan too
            status = self._recover_one(run, now, report)
            if status is not None:
                report.recovered.append((run.id, status))

    def _recover_one(self, run: RunRecord, now: float, report: TickReport) -> RunStatus | None:
        beat = _ts(run.heartbeat_at)
        age = float("inf") if beat is None else now - beat
        fresh = age <= self.settings.stale_after_s
        if run.host != self.executor.host:
            if fresh:
                return None  # alive elsewhere; a supervisor on its host adopts it
            return self._conclude(run.id, run.claim_token, ExitInfo(None), now,
                                  forced=f"no heartbeat for {age:.0f} s from host {run.host}")
        handle = self.executor.attach(run) if run.pid else None
        if handle is not None and fresh:
            if self.store.adopt(run.id, run.claim_token, self.id):
                free = self._free_slots()
                slot = next((s for s in free if s.device == run.device), free[0] if free else None)
                self.active[run.id] = Active(run.id, run.claim_token, handle, slot, adopted=True)
                self.executor.note(run.id, f"supervisor {self.id} adopted its process {run.pid}")
                report.adopted.append(run.id)
            return None
        if handle is not None:
            handle.kill()
            return self._conclude(run.id, run.claim_token, ExitInfo(None), now,
                                  forced=f"no heartbeat for {age:.0f} s; killed its process")
        if run.pid is None and fresh:
            return None  # just claimed; its process has not said its pid yet
        return self._conclude(run.id, run.claim_token, ExitInfo(None), now,
                              forced="its process is gone and so is the supervisor that watched it")
