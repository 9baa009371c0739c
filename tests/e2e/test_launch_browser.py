"""End to end, the Launch page at a laptop's size (1280x720) in headless Debian Chromium: the form
generated from the spec and the loss registry (SCE with its own alpha and beta, launched and
queued), a sweep over q as one group, bad links shown as one line each, the data check.

Screenshots (test-artifacts/): 10-launch-1280x720.png (the first screen as a newcomer sees it,
no scrolling), 11-launch-sce.png (SCE chosen, its parameters), 12-launch-queued.png (the
confirmation and the link to watch), 13-launch-bad-link.png, 14-launch-missing-data.png,
15-launch-sweep.png, 16-launch-form-full.png (the whole form with
Advanced open).
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.test_lab_browser import (
    ARTIFACTS,
    CHROMIUM,
    Lab,
    assert_clean,
    open_page,
    settle,
    shot,
    wait_until,
)

pytestmark = pytest.mark.e2e

SMALL = {"width": 1280, "height": 720}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed: run `make e2e-deps` as root (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    return tmp_path_factory.mktemp("launch-home")


@pytest.fixture(scope="module")
def lab(home, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("GCE_LAB_DATA", str(tmp_path_factory.mktemp("no-data")))  # no CIFAR here
    lab = Lab(home, ARTIFACTS / "lab-launch.log")
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def page(lab, browser):
    context = browser.new_context(viewport=SMALL)
    page = context.new_page()
    page.set_default_timeout(90_000)  # a shared 2-core machine: the first page imports torch
    yield page
    context.close()


def view_shot(page, name: str) -> None:
    """What the viewport shows, without scrolling."""
    page.mouse.move(5, 5)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def in_view(locator, whole: bool = True) -> bool:
    """The element is on screen without scrolling (``whole``: all of it, else its first lines)."""
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + (box["height"] if whole else 40) <= SMALL["height"]


def launch_button(page):
    return page.get_by_role("button", name="Launch", exact=False).first


def metric(page, label: str) -> str:
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue").inner_text()


def test_a_new_loss_from_the_form_is_queued_and_everything_fits_a_laptop_screen(lab, client, page):
    open_page(page, f"{lab.url}/?epochs=3", "Launch runs")
    assert_clean(page)
    button = launch_button(page)
    assert button.inner_text() == "Launch 3 runs" and in_view(button), "the Launch button needs scrolling at 1280x720"
    view_shot(page, "10-launch-1280x720")
    # The summary follows each change at once (no Preview button).
    assert page.get_by_role("button", name="Preview").count() == 0
    pills = page.get_by_test_id("stButtonGroup").first
    for label in ("CCE", "MAE"):
        pills.get_by_role("button", name=label, exact=True).click()
        settle(page)
    pills.get_by_role("button", name="SCE", exact=True).click()
    settle(page)
    wait_until("the summary to count 2 runs", lambda: metric(page, "Runs") == "2", 15)
    alpha = page.get_by_role("spinbutton", name="alpha", exact=True)
    assert alpha.input_value() == "0.1" and page.get_by_role("spinbutton", name="beta", exact=True).input_value() == "1"
    alpha.fill("0.5")
    alpha.press("Enter")
    settle(page)
    wait_until("the link to hold sce.alpha", lambda: "sce.alpha=0.5" in page.url, 15)
    assert_clean(page)
    view_shot(page, "11-launch-sce")
    launch_button(page).click()
    done = page.get_by_text("Queued 2 run(s)")
    done.wait_for()
    watch = page.get_by_role("link", name="Watch them live on Runs")
    assert in_view(done) and in_view(watch), "the confirmation needs scrolling"
    view_shot(page, "12-launch-queued")
    runs = {r.spec.loss: r.spec for r in client.list_runs()}
    assert set(runs) == {"lq", "sce"} and (runs["sce"].alpha, runs["sce"].beta, runs["sce"].A) == (0.5, 1.0, -4.0)
    assert runs["lq"].epochs == 3
    watch.click()
    page.get_by_role("heading", name="Runs").wait_for()
    assert "runs=" in page.url


def test_bad_link_values_show_the_form_with_one_line_each(lab, page):
    open_page(page, f"{lab.url}/?rate=2&q=0.01&loss=nope&epochs=abc", "Launch runs")
    assert page.locator('[data-testid="stException"]').count() == 0
    notes = page.get_by_test_id("stAlertContentWarning").filter(has_text="Link parameter").all_inner_texts()
    assert len(notes) == 3, notes
    assert any(n.startswith("Link parameter rate=2: Noise rate η must be in [0, 0.85]") for n in notes)
    assert any(n.startswith("Link parameter epochs=abc: Epochs must be a whole number in [1, 5000]") for n in notes)
    assert any(n.startswith("Link parameter loss=nope: Losses to compare has no 'nope'") for n in notes)
    assert metric(page, "Runs") == "3" and launch_button(page).is_enabled()
    view_shot(page, "13-launch-bad-link")


def test_missing_data_is_refused_with_how_to_get_it(lab, client, page):
    before = client.count_runs()
    open_page(page, f"{lab.url}/?ds=cifar10", "Launch runs")
    error = page.get_by_test_id("stAlertContentError").first
    text = error.inner_text()
    assert "'cifar10' was not found" in text and "How to get it" in text and "--download" in text
    assert launch_button(page).is_disabled() and in_view(error, whole=False)
    view_shot(page, "14-launch-missing-data")
    assert client.count_runs() == before


def test_a_sweep_over_q_is_queued_as_one_group(lab, client, page):
    before = {r.id for r in client.list_runs()}
    open_page(page, f"{lab.url}/?losses=cce,lq&sweep=q&values=0.1,0.7,1&epochs=2", "Launch runs")
    assert metric(page, "Runs") == "4"
    assert page.get_by_text("CCE takes no q").count() == 1
    assert_clean(page)
    view_shot(page, "15-launch-sweep")
    launch_button(page).click()
    page.get_by_text("Queued 4 run(s)").wait_for()
    new = [r for r in client.list_runs() if r.id not in before]
    assert len({r.group for r in new}) == 1 and {r.tags for r in new} == {("sweep q",)}
    assert sorted((r.spec.loss, r.spec.loss_params().get("q")) for r in new) == [("cce", None), ("lq", 0.1), ("lq", 0.7), ("lq", 1.0)]
    page.get_by_text("Advanced: optimiser, schedule, data").click()
    shot(page, "16-launch-form-full")  # the whole form, Advanced open (a tall viewport, last)
