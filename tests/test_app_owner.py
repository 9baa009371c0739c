"""app.owner: a stable, signed owner per browser, and both caps (runs queued or running per
browser, the store's queued runs per owner) counted on it, with a real store."""

from __future__ import annotations

import stat
import threading
from types import SimpleNamespace

import pytest

from app import owner
from gce_core.spec import from_preset
from jobs.client import LabClient, SubmitRefused
from tests.app_helpers import train_queued


def specs(n: int) -> list:
    return [from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=2, loss="cce", seed=s) for s in range(n)]


def test_the_cookie_is_signed_and_the_secret_kept(lab_home):
    secret = owner.lab_secret(lab_home)
    path = lab_home / owner.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    owner._secrets.clear()
    assert owner.lab_secret(lab_home) == secret  # the same after a restart: owners are stable
    value = owner.new_cookie_value(secret)
    ident = value.split(".")[0]
    assert owner.owner_from_cookie(value, secret) == f"web-{ident}"
    assert owner.owner_from_cookie(value, b"another lab's secret") is None
    assert owner.owner_from_cookie(f"{'0' * 16}.{value.split('.')[1]}", secret) is None  # signature of another id
    assert owner.owner_from_cookie(ident, secret) is None
    assert owner.owner_from_cookie(None, secret) is None
    header = f"other=1; {owner.COOKIE}={value}"
    assert owner.owner_from_cookie_header(header, secret) == f"web-{ident}"
    assert owner.owner_from_cookie_header('bad"cookie', secret) is None
    assert owner.new_cookie_value(secret) != value  # each browser its own


def test_a_browser_without_a_valid_cookie_is_owned_by_its_address(lab_home):
    secret = owner.lab_secret(lab_home)
    value = owner.new_cookie_value(secret)
    assert owner.owner_for({owner.COOKIE: value}, "10.0.0.7", secret) == owner.owner_from_cookie(value, secret)
    assert owner.owner_for({}, None, secret) == owner.LOCAL_OWNER
    a = owner.owner_for({owner.COOKIE: "forged"}, "10.0.0.7", secret)
    assert a.startswith("web-ip-") and "10.0.0.7" not in a
    assert a == owner.owner_for({}, "10.0.0.7", secret) != owner.owner_for({}, "10.0.0.8", secret)


def test_the_cap_counts_the_browsers_runs_not_the_sessions(lab_home):
    client = LabClient()
    alice, bob = "web-aaaaaaaaaaaaaaaa", "web-bbbbbbbbbbbbbbbb"
    _, first = owner.submit_owned(client, specs(3), cap=4, owner=alice)
    assert [client.get(i).owner for i in first] == [alice] * 3
    # a new tab or session of the same browser: the same owner, so the same count
    with pytest.raises(SubmitRefused, match="already has 3 run\\(s\\) queued or running; the cap is 4 per browser") as exc:
        owner.submit_owned(client, specs(2), cap=4, owner=alice)
    assert exc.value.problems[0][0] == "runs"
    assert client.count_runs() == 3  # nothing queued
    owner.submit_owned(client, specs(4), cap=4, owner=bob)  # another browser has its own cap
    train_queued(client, epochs=2)  # everything finishes: finished runs do not count
    assert owner.active_runs(client, alice) == 0
    owner.submit_owned(client, specs(4), cap=4, owner=alice)
    assert owner.active_runs(client, alice) == 4 and owner.active_runs(client, bob) == 0


def test_the_stores_queue_cap_is_per_browser(lab_home, monkeypatch):
    monkeypatch.setenv("GCE_LAB_MAX_QUEUED_PER_OWNER", "3")
    client = LabClient()
    owner.submit_owned(client, specs(3), cap=100, owner="web-aaaaaaaaaaaaaaaa")
    with pytest.raises(SubmitRefused, match="limit is 3"):
        owner.submit_owned(client, specs(1), cap=100, owner="web-aaaaaaaaaaaaaaaa")
    owner.submit_owned(client, specs(3), cap=100, owner="web-bbbbbbbbbbbbbbbb")
    assert client.count_runs() == 6


def test_two_tabs_submitting_at_once_stay_under_the_cap(lab_home):
    client = LabClient()
    results = []

    def submit():
        try:
            results.append(len(owner.submit_owned(client, specs(3), cap=4, owner="web-cccccccccccccccc")[1]))
        except SubmitRefused:
            results.append(0)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 0, 0, 3]
    assert client.count_runs() == 3


def test_own_runs_first():
    runs = [SimpleNamespace(id=i, owner=o) for i, o in enumerate(["b", "a", "b", "a", "c"])]
    assert [r.id for r in owner.own_first(runs, "a")] == [1, 3, 0, 2, 4]
    assert [r.id for r in owner.own_first(runs, "z")] == [0, 1, 2, 3, 4]
