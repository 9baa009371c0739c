"""End to end: start the lab like `make run` does (`python -m app`), drive it with headless Debian
Chromium, and save a screenshot of every page to test-artifacts/.

The journey: launch the quick demo (CCE vs MAE vs Lq), watch the curves grow in place on Runs
(a zoom survives the refresh), cancel a run, compare the finished ones, download the CSV and a
PNG, look at Theory and Noise insight, then Ctrl-C the lab and start it again: nothing is lost.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from app.__main__ import healthy
from app.compare_logic import describe
from jobs.status import RunStatus
from tests.app_helpers import lab_processes

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1700}  # tall: Streamlit scrolls inside its main block


def wait_until(what: str, check: Callable[[], object], timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lab_env(home: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCE_LAB_") or k == "GCE_LAB_DATA"}
    env.update(GCE_LAB_HOME=str(home), GCE_LAB_REFRESH_SECONDS="1", PYTHONUNBUFFERED="1")
    return env


class Lab:
    """`python -m app` on a free port, its output in a log file."""

    def __init__(self, home: pathlib.Path, log: pathlib.Path):
        self.home, self.log_path = home, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "--port", str(self.port), "--slots", "2"],
                cwd=ROOT, env=lab_env(home), stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            wait_until("the lab's health check", lambda: self.proc.poll() is not None or healthy(self.url), 90)
        except AssertionError:
            self.stop()
            raise
        assert self.proc.poll() is None, f"the lab died at start:\n{self.log()}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> pathlib.Path:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed: run `make e2e-deps` as root (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    return tmp_path_factory.mktemp("lab-home")


@pytest.fixture(scope="module")
def lab(home):
    lab = Lab(home, ARTIFACTS / "lab.log")
    yield lab
    lab.stop()


@pytest.fixture(scope="module")
def page(browser):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


# --- page helpers --------------------------------------------------------------------------------
def open_page(page, url: str, title: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=title).wait_for()
    settle(page)


def settle(page, quiet_s: float = 1.0) -> None:
    """Wait until the script run has finished (Streamlit's running indicator gone)."""
    time.sleep(quiet_s)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"] [data-testid=\"stStatusWidgetRunningIcon\"]')")


def assert_clean(page) -> None:
    """No exception box and no error box on the page."""
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').first.inner_text()
    errors = page.locator('[data-testid="stAlertContentError"]')
    assert errors.count() == 0, errors.first.inner_text()


def plot_points(page, index: int = 0) -> list[int]:
    """Number of points of each trace of the index-th plotly chart ([] if none yet)."""
    return page.evaluate(
        """(i) => { const g = document.querySelectorAll('.js-plotly-plot')[i];
                    return g && g._fullData ? g._fullData.map(t => (t.x || []).length || 0) : []; }""",
        index,
    )


def svg_markup(page) -> str:
    """The live chart's drawing (changes whenever Vega redraws it)."""
    return page.evaluate("() => document.querySelector('[data-testid=\"stVegaLiteChart\"] svg').innerHTML")


def axis_ticks(page) -> list[list[str]]:
    """Tick labels of each axis of the live chart, sorted: [detail x, detail y, overview x]."""
    return page.evaluate(
        """() => { const svg = document.querySelector('[data-testid="stVegaLiteChart"] svg');
                   if (!svg) return [];
                   return [...svg.querySelectorAll('.role-axis')]
                     .map(a => [...a.querySelectorAll('.role-axis-label text')].map(t => t.textContent))
                     .filter(labels => labels.length)
                     .map(labels => labels.sort((a, b) => parseFloat(a) - parseFloat(b))); }"""
    )


def chart_texts(page, role: str) -> list[str]:
    """Texts of the live chart's items of one Vega role: title-text, title-subtitle, legend-label."""
    return page.evaluate(
        """(role) => [...document.querySelectorAll(`[data-testid="stVegaLiteChart"] svg .role-${role} text`)]
                      .map(t => t.textContent)""",
        role,
    )


def chart_lines(page) -> int:
    """Number of drawn lines (paths with at least two points) in the live chart, strip included."""
    return page.evaluate(
        """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"] svg .mark-line path')]
                  .filter(p => ((p.getAttribute('d') || '').match(/L/g) || []).length >= 1).length"""
    )


def overview_area(page) -> tuple[float, float, float, float]:
    """Screen box (x, y, width, height) of the live chart's overview strip (the flat wide one)."""
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"] svg .role-scope path.background')]
                  .map(p => { const r = p.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })"""
    )
    return min((b for b in boxes if b[2] > 400 and b[3] > 0), key=lambda b: b[3])


def zoom_and_wait_for_epochs(page, epochs) -> tuple[str | None, list[str], list[str], list[str]]:
    """Drag on the Vega chart's strip (zoom its detail chart), then wait until ``epochs()`` (the
    runs' stored epochs) has grown and the chart has redrawn. Returns ('same' if the chart is the
    element it was before, the detail's x ticks just after the drag, then after the refresh, and
    the strip's x ticks after it)."""
    page.evaluate("() => { document.querySelector('[data-testid=\"stVegaLiteChart\"]').__e2e = 'same'; }")
    x, y, w, h = overview_area(page)
    page.mouse.move(x + w * 0.05, y + h / 2)
    page.mouse.down()
    page.mouse.move(x + w * 0.4, y + h / 2, steps=6)
    page.mouse.up()
    time.sleep(0.5)
    zoomed, drawing, done = axis_ticks(page)[0], svg_markup(page), epochs()
    wait_until("the chart to redraw with new epochs", lambda: epochs() > done + 2 and svg_markup(page) != drawing, 60)
    time.sleep(1.5)
    same = page.evaluate("() => document.querySelector('[data-testid=\"stVegaLiteChart\"]').__e2e")
    detail_x, _, overview_x = axis_ticks(page)
    return same, zoomed, detail_x, overview_x


def axis_titles(page) -> list[list[str]]:
    """[title, x title, y title] of every plotly chart on the page."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')].map(g => [
                (g.layout.title || {}).text || '', (g.layout.xaxis.title || {}).text || '',
                (g.layout.yaxis.title || {}).text || ''])"""
    )


def assert_charts_titled(page, count: int) -> None:
    titles = wait_until(f"{count} charts", lambda: (t := axis_titles(page)) and len(t) >= count and t, 30)
    for chart in titles:
        assert all(chart), f"a chart lacks a title or an axis title: {chart}"


def shot(page, name: str) -> None:
    """Screenshot of the whole page: the viewport grows to the main block's height first
    (Streamlit scrolls inside it, so a plain full-page shot would cut it)."""
    page.mouse.move(5, 5)  # no hover tooltips in the picture
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], int(height) + 160)})
    time.sleep(1.0)  # charts re-layout to the new size
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    page.set_viewport_size(VIEWPORT)


# --- the journey ---------------------------------------------------------------------------------
def test_quick_demo_journey(lab, client, page):
    # Launch: the first screen is the quick demo, ready to go; two seeds per loss for bands.
    wait_until("the worker's first heartbeat", lambda: client.executor_info()["workers_alive"], 90)
    page.goto(lab.url)  # the server's first page imports torch: slow on a loaded machine
    page.get_by_role("heading", name="Launch runs").wait_for(timeout=120_000)
    open_page(page, lab.url, "Launch runs")

    def sees_worker() -> bool:  # the caption is drawn once per render: reload until it has the worker
        caption = page.get_by_text("worker(s) alive")
        if caption.count() and "1 worker(s) alive" in caption.first.inner_text():
            return True
        open_page(page, lab.url, "Launch runs")
        return False

    wait_until("the Launch page to see the worker", sees_worker, 120, every=2)
    assert_charts_titled(page, 1)  # the noise heatmap
    assert_clean(page)
    shot(page, "01-launch")
    page.get_by_role("spinbutton", name="Seeds per loss", exact=True).fill("2")
    page.get_by_role("spinbutton", name="Epochs", exact=True).fill("150")  # time to watch and cancel
    page.get_by_role("spinbutton", name="Epochs", exact=True).press("Enter")
    page.get_by_role("button", name="Launch 6 runs", exact=True).click()  # the summary followed
    launched = time.monotonic()
    page.get_by_text("Queued 6 run(s)").wait_for()
    runs = client.list_runs()
    assert sorted(r.spec.loss for r in runs) == ["cce", "cce", "lq", "lq", "mae", "mae"]
    assert {(r.spec.noise, r.spec.noise_rate, r.spec.dataset, r.spec.epochs) for r in runs} == {("uniform", 0.4, "digits", 150)}
    ids = [r.id for r in runs]

    # Runs: the curves appear live.
    page.get_by_role("link", name="Watch them live on Runs").click()
    page.get_by_role("heading", name="Runs").wait_for()
    page.get_by_test_id("stVegaLiteChart").first.wait_for(timeout=60_000)
    first_point = time.monotonic() - launched
    first_row = min(client.metrics(i)[0]["seconds"] for i in ids if client.metrics(i))  # sanity: a row exists
    (ARTIFACTS / "timings.json").write_text(json.dumps({
        "launch click to first curve point on Runs (s)": round(first_point, 3),
        "what it includes": "Launch click, 'Queued' message, a click on 'Watch them live on Runs', "
                            "the Runs page's render with its live chart",
        "first epoch's own training seconds": round(first_row, 3),
        "load average": os.getloadavg()[0],
    }, indent=2))

    # Cancel a run mid-way. The 6 runs share 2 slots, one run at a time in each slot's warm run
    # process: cancelling one stops it at a batch boundary, and its process takes the next run.
    live = [i for i in ids if client.get(i).status in (RunStatus.QUEUED, RunStatus.RUNNING)]
    assert live, "no run left to cancel; the demo ran faster than the test"
    queued = [i for i in live if client.get(i).status == RunStatus.QUEUED]
    target = (queued or live)[0]  # ids are newest first: the last run to start, so it cannot finish first
    open_page(page, f"{lab.url}/runs?runs={target}", "Runs")
    page.get_by_role("button", name="Cancel (1)").click()
    wait_until("the run to be cancelled", lambda: client.get(target).status == RunStatus.CANCELLED, 30)
    page.locator('[role="gridcell"]', has_text="cancelled").first.wait_for(state="attached")  # the table shows it
    assert_clean(page)
    shot(page, "02-runs-cancelled")

    # The others: the live chart grows in place (same element, redrawn) and keeps the zoom.
    others = [i for i in ids if i != target]
    open_page(page, f"{lab.url}/runs?runs={','.join(others)}", "Runs")
    wait_until("axes on the live chart", lambda: len(axis_ticks(page)) == 3 and len(axis_ticks(page)[0]) > 1, 60)
    same, zoomed, detail_x, overview_x = zoom_and_wait_for_epochs(page, lambda: sum(client.get(i).epochs_done for i in others))
    assert same == "same", "the live chart was re-created instead of updated in place"
    assert detail_x == zoomed, "the refresh reset the zoom"
    assert max(map(float, overview_x)) > max(map(float, detail_x)), "the zoom did not narrow the chart"
    assert_clean(page)
    shot(page, "03-runs-live-zoomed")

    # Compare the others once they are done: CCE, MAE, Lq with mean ± std over two seeds.
    wait_until("the other runs to complete", lambda: all(client.get(i).status == RunStatus.COMPLETED for i in others), 300)
    open_page(page, f"{lab.url}/compare?runs={','.join(ids)}", "Compare runs")
    names = wait_until("the chart's legend", lambda: chart_texts(page, "legend-label"), 60)
    # Every loss has both seeds, unless the cancelled run was stopped before its first epoch.
    both_seeds = 3 if client.get(target).epochs_done > 0 else 2
    assert sum(" (n=2)" in n for n in names) == both_seeds and len(names) == 3, names
    assert chart_texts(page, "title-text") == ["test accuracy: mean ± std over runs"]
    subtitle = chart_texts(page, "title-subtitle")  # what the chart shows, so a saved PNG says it
    assert subtitle == [f"{len(ids)} runs: {describe([client.get(i).spec for i in ids])}"], subtitle
    assert "150 epochs · uniform 0.4 · CCE, MAE, Lq q=0.7 · 2 seeds" in subtitle[0], subtitle
    ran = sum(client.get(i).epochs_done > 1 for i in ids)
    assert chart_lines(page) == ran + 3 + 3, "not a thin line per run and a mean line per loss (chart and strip)"
    page.locator("[role=columnheader]", has_text="test acc @ best val (%)").first.wait_for(state="attached")
    assert_clean(page)
    shot(page, "04-compare")
    with page.expect_download() as download:
        page.get_by_test_id("stDownloadButton").get_by_role("button").click()
    csv_path = ARTIFACTS / "compare.csv"
    download.value.save_as(csv_path)
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")  # one row per run and epoch, one column per spec field
    assert header[:4] == ["run_id", "status", "group", "tags"] and {"loss", "q", "noise_rate", "seed", "epoch", "test_acc"} <= set(header)
    assert {line.split(",")[0] for line in lines[1:]} >= set(others)
    page.get_by_test_id("stVegaLiteChart").first.hover()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download as PNG").first.click()  # the chart's toolbar
    png_path = ARTIFACTS / "compare-chart.png"
    download.value.save_as(png_path)
    png = png_path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 1000 and height > 600, (width, height)  # the whole chart at twice its size, not an icon

    # Theory, with the finished Lq run inside its band.
    by_loss = {client.get(i).spec.loss: i for i in reversed(others)}
    open_page(page, f"{lab.url}/theory?run={by_loss['lq']}", "Why Lq resists label noise")
    assert_charts_titled(page, 4)
    assert_clean(page)
    shot(page, "05-theory")

    # Noise insight for CCE: the flipped samples drift right as it memorises.
    open_page(page, f"{lab.url}/insight?run={by_loss['cce']}", "Noise insight")
    assert_charts_titled(page, 2)
    assert_clean(page)
    shot(page, "06-insight")


def test_teaching_mode_hides_advanced_controls(lab, page):
    open_page(page, f"{lab.url}/?teach=1", "Lesson: learning from noisy labels")  # the first screen
    open_page(page, f"{lab.url}/launch?teach=1", "Launch runs")
    assert page.get_by_text("Advanced: optimiser, schedule, data").count() == 0
    assert page.get_by_role("switch", name="Teaching mode").is_checked()
    assert_clean(page)
    shot(page, "07-launch-teaching")
    open_page(page, f"{lab.url}/runs?teach=1", "Runs")
    assert page.get_by_role("button", name="Archive").count() == 0
    assert "teach=1" in page.url


def test_ctrl_c_stops_both_and_a_restart_loses_nothing(lab, client, page, home):
    assert lab_processes(home), "no lab process found"
    if not client.count_runs():  # run alone (-k): give the restart something to keep
        client.submit({"dataset": "digits", "epochs": 1, "noise": "uniform", "noise_rate": 0.2})
    before = {r.id: r.status for r in client.list_runs()}
    assert lab.stop(signal.SIGINT) == 0
    wait_until("every lab process to exit", lambda: not lab_processes(home), 30)
    assert not healthy(lab.url)
    assert "SIGINT received, stopping the worker and the server" in lab.log()
    again = Lab(home, ARTIFACTS / "lab-restart.log")
    try:
        assert {r.id: r.status for r in client.list_runs()} == before
        open_page(page, f"{again.url}/runs", "Runs")
        table = page.get_by_test_id("stDataFrame")
        table.wait_for()
        assert_clean(page)
        shot(page, "08-runs-after-restart")
    finally:
        assert again.stop(signal.SIGTERM) == 0
