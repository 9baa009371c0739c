"""Waits for runs inside the lab's container, for docker/test.sh: one process that polls the
store, where one `podman exec ... python -m jobs show` a poll would start Python each time.

    podman exec NAME python -c "$(cat docker/wait.py)" TIMEOUT_S CONDITION RUN_ID...

CONDITION: completed, cancelled, running>N (running with more than N epochs stored) or
resumed>N (the same, started at least twice). Prints each run as id:status:epochs:attempts and
exits 0 when every run meets it; exits 1, saying why, on a failed run or at the timeout."""

import sys
import time

from jobs.client import LabClient


def met(run, condition: str) -> bool:
    if condition in ("completed", "cancelled"):
        return run.status == condition
    kind, n = condition.split(">")
    return run.status == "running" and run.epochs_done > int(n) and (kind == "running" or run.attempts >= 2)


def main(timeout_s: str, condition: str, *run_ids: str) -> int:
    client, deadline = LabClient(), time.monotonic() + float(timeout_s)
    while True:
        runs = [client.get(run_id) for run_id in run_ids]
        state = " ".join(f"{r.id}:{r.status}:{r.epochs_done}:{r.attempts}" for r in runs)
        for r in runs:
            if r.status == "failed" or (r.status == "cancelled" and condition != "cancelled"):
                print(f"run {r.id} is {r.status}: {r.error}")
                return 1
        if all(met(r, condition) for r in runs):
            print(state)
            return 0
        if time.monotonic() > deadline:
            print(f"not {condition} after {timeout_s} s: {state}")
            return 1
        time.sleep(0.5)


sys.exit(main(*sys.argv[1:]))
