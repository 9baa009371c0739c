"""The pages' side of issue 19's web defects, through Streamlit's AppTest with a real store:
password guesses counted per address over fresh sessions, errors on the Runs page that stay
visible, and in teaching mode a browser's own runs first."""

from __future__ import annotations

import pytest

from app import auth, owner
from jobs.client import LabClient
from tests.app_helpers import train_queued
from tests.test_app_auth import Clock
from tests.test_app_pages import app, button, page, submit_demo


@pytest.fixture
def client(lab_home) -> LabClient:
    from streamlit import config

    config.set_option("server.address", "127.0.0.1")  # as .streamlit/config.toml says
    return LabClient()


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(auth, "THROTTLE", auth.Throttle(clock))
    return clock


def login(password: str):
    at = app().run()
    at.text_input(key="main_password").input(password)
    button(at, "Enter").click().run()
    return at


def test_fresh_sessions_do_not_reset_the_password_delay(client, clock, monkeypatch):
    monkeypatch.setenv("GCE_LAB_PASSWORD", "s3cret")
    assert login("guess-1").error[0].value == "Wrong password."  # each a new browser session
    at = login("guess-2")
    assert at.error[0].value == "Wrong password."
    assert "2 wrong passwords in a row from your address: the next try is heard in 1 s" in at.caption[0].value
    at = login("s3cret")  # too early: not even compared, however fresh the session
    assert at.error[0].value == "Too many wrong passwords: the next try is heard in 1 s."
    assert [t.value for t in at.title] == ["GCE Lab"]
    clock.now += 1
    at = login("s3cret")
    assert not at.error and at.title[0].value == "Launch runs"


def test_a_bad_tag_says_why_and_the_message_stays(client):
    _, ids = submit_demo(client)
    train_queued(client, epochs=6)
    at = page(app(), "views/runs.py", {"runs": ids[0]})
    at.text_input(key="runs_tags").input("paper\u200b")  # a zero-width space inside
    button(at, "Add tags").click().run()
    assert any("printable characters" in e.value and "paper" in e.value for e in at.error)
    assert client.get(ids[0]).tags == ()
    at.text_input(key="runs_tags").input(" , ")
    button(at, "Add tags").click().run()
    assert any("Type one or more tags" in e.value for e in at.error)


def test_an_action_that_fails_keeps_its_error_over_the_rerun(client):
    _, ids = submit_demo(client)
    train_queued(client, epochs=6)
    client.tag(ids[0], [f"t{i}" for i in range(19)])
    at = page(app(), "views/runs.py", {"runs": ids[0]})
    at.text_input(key="runs_tags").input("paper, baseline")  # fine alone, one too many on the run
    button(at, "Add tags").click().run()
    assert any(f"Could not tag run {ids[0]}: 21 tags; a run may have at most 20" in e.value.replace("\\", "") for e in at.error)
    assert len(client.get(ids[0]).tags) == 19
    at.run()  # shown once: the next run of the page is clean again
    assert not any("Could not tag" in e.value for e in at.error)


def test_teaching_mode_shows_this_browsers_runs_first(client):
    from gce_core.spec import from_preset

    mine = client.submit_group([from_preset("quick", "digits", epochs=2, loss="cce", seed=s) for s in range(2)],
                               owner=owner.LOCAL_OWNER)[1]  # AppTest has no cookie: this machine's owner
    theirs = client.submit_group([from_preset("quick", "digits", epochs=2, loss="mae", seed=s) for s in range(3)],
                                 owner="web-0123456789abcdef")[1]
    at = page(app({"teach": "1"}), "views/runs.py", {"teach": "1"})
    shown = list(at.dataframe[0].value["id"])
    assert set(shown[:2]) == set(mine) and set(shown[2:]) == set(theirs)
    assert set(at.multiselect(key="runs_selected").value) == set(mine)  # its own newest group, plotted
    plain = page(app(), "views/runs.py")
    assert set(list(plain.dataframe[0].value["id"])[:3]) == set(theirs)  # newest first otherwise
