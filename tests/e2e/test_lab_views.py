"""End to end, the lesson, sweeps, filters and offline: a job worker and the lab's web server
(app/serve.py), started with the launcher's own commands, driven with headless Chromium.

- the lesson: a step the lab has no runs for launches them at the reveal and its chart grows;
- a sweep submitted through jobs.client: its summary chart against q, error bars, n, the bound;
- filters on Compare and Runs ('showing m of n runs'); Compare keeping its zoom (a brush on the
  strip under its chart) while runs train;
- offline: no request to any host but the lab's, no 404 on a deep link, on every page;
- 500 runs in a store: every page's render time, written to test-artifacts/render-times-500.json.

Screenshots go to test-artifacts/ (1x-*.png).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest

from app.__main__ import commands, healthy
from gce_core.lesson import get_step
from gce_core.spec import from_preset
from jobs.client import LabClient
from jobs.status import RunStatus
from tests.app_helpers import train_queued
from tests.e2e.test_lab_browser import (
    ARTIFACTS,
    CHROMIUM,
    ROOT,
    VIEWPORT,
    assert_charts_titled,
    assert_clean,
    axis_ticks,
    chart_texts,
    free_port,
    lab_env,
    open_page,
    plot_points,
    settle,
    shot,
    wait_until,
    zoom_and_wait_for_epochs,
)

pytestmark = pytest.mark.e2e

PAGES = {  # url path -> heading (not in teaching mode: Launch is the first screen)
    "/": "Launch runs", "/lesson": "Lesson: learning from noisy labels", "/runs": "Runs",
    "/compare": "Compare runs", "/sweep": "Sweep", "/theory": "Why Lq resists label noise", "/insight": "Noise insight",
}


class Server:
    """The web server (the launcher's command) and, unless ``worker`` is False, a job worker, on one home."""

    def __init__(self, home: pathlib.Path, name: str, *, worker: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmds = commands("127.0.0.1", self.port, 2, worker=worker)
        self.procs = []
        for key, cmd in cmds.items():
            log = open(ARTIFACTS / f"{name}-{key}.log", "wb")  # noqa: SIM115  (closed in stop)
            self.procs.append((subprocess.Popen(cmd, cwd=ROOT, env=lab_env(home), stdout=log, stderr=subprocess.STDOUT), log))
        try:
            wait_until("the server's health check", lambda: healthy(self.url), 90)
        except AssertionError:
            self.stop()
            raise

    def stop(self) -> None:
        for proc, _log in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, log in self.procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> pathlib.Path:
    if not pathlib.Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: run `make e2e-deps` as root (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    return tmp_path_factory.mktemp("views-home")


@pytest.fixture(scope="module")
def lab(home):
    server = Server(home, "views")
    yield server
    server.stop()


class Traffic:
    """Every request the page makes, and every response of 400 or more (or failed request)."""

    def __init__(self, page):
        self.urls: list[str] = []
        self.bad: list[tuple] = []
        page.on("request", lambda r: self.urls.append(r.url))
        page.on("response", lambda r: self.bad.append((r.status, r.url)) if r.status >= 400 else None)
        page.on("requestfailed", lambda r: self.bad.append(("failed", r.url, r.failure)) if urlparse(r.url).hostname not in ("127.0.0.1", "localhost") else None)

    def outside(self) -> list[str]:
        return sorted({u for u in self.urls if urlparse(u).scheme in ("http", "https", "ws", "wss")
                       and urlparse(u).hostname not in ("127.0.0.1", "localhost")})

    def clear(self) -> None:
        self.urls.clear()
        self.bad.clear()


@pytest.fixture(scope="module")
def page_and_traffic(browser):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(240_000)  # the first render of a cold server on a loaded machine (8 users, 2 cores)
    traffic = Traffic(page)
    yield page, traffic
    context.close()


@pytest.fixture
def page(page_and_traffic):
    return page_and_traffic[0]


def clean(page, name: str) -> None:
    """assert_clean, with a screenshot of the page when it fails."""
    try:
        assert_clean(page)
    except AssertionError:
        page.screenshot(path=str(ARTIFACTS / f"FAILED-{name}.png"))
        raise


def choose(page, label: str) -> None:
    page.get_by_text(label, exact=True).click()
    settle(page, 0.5)


# --- offline ------------------------------------------------------------------------------------
def test_no_request_leaves_the_machine_and_deep_links_do_not_404(lab, page_and_traffic):
    page, traffic = page_and_traffic
    report = {}
    for path, heading in PAGES.items():
        traffic.clear()
        open_page(page, lab.url + path, heading)
        time.sleep(1.0)
        report[path] = {"outside": traffic.outside(), "bad": traffic.bad[:]}
        clean(page, "offline" + path.replace("/", "-"))
    (ARTIFACTS / "offline-requests.json").write_text(json.dumps(report, indent=2))
    assert all(not r["outside"] for r in report.values()), {p: r["outside"] for p, r in report.items() if r["outside"]}
    assert all(not r["bad"] for r in report.values()), {p: r["bad"] for p, r in report.items() if r["bad"]}
    favicon = page.evaluate("() => [...document.querySelectorAll('link[rel*=icon]')].map(l => l.href)")
    assert favicon and all(urlparse(u).hostname == "127.0.0.1" for u in favicon), favicon


# --- the lesson ---------------------------------------------------------------------------------
def test_lesson_step_without_runs_launches_them_and_the_chart_grows(lab, client, page):
    step = get_step("mae")
    open_page(page, f"{lab.url}/lesson?step=2", "Lesson: learning from noisy labels")
    page.get_by_role("heading", name="Step 2 of 5: MAE resists the noise, but learns slowly").wait_for()
    assert page.get_by_role("button", name="Reveal the results").is_disabled()  # predict first
    shot(page, "11-lesson-predict")
    choose(page, step.choices[step.answer])
    page.get_by_role("button", name="Reveal the results").click()
    page.get_by_text("Right:").wait_for()
    page.get_by_text("it launched 4 small runs").wait_for()
    assert len(client.list_runs(group=step.group)) == 4
    page.locator(".js-plotly-plot").first.wait_for()
    wait_until("the first points", lambda: sum(plot_points(page)) > 0, 120)
    first = sum(plot_points(page))
    if any(r.status != RunStatus.COMPLETED for r in client.list_runs(group=step.group)):
        wait_until("the chart to grow while the runs train", lambda: sum(plot_points(page)) > first, 120)
    else:  # a loaded machine drew the page after the runs ended: the growth was not seen
        (ARTIFACTS / "lesson-growth-not-seen.txt").write_text("the step's runs had finished before its chart was first drawn\n")
    assert_charts_titled(page, 2)
    assert_clean(page)
    wait_until("the step's runs to finish", lambda: all(r.status == RunStatus.COMPLETED for r in client.list_runs(group=step.group)), 300)
    time.sleep(3)
    shot(page, "12-lesson-revealed")
    names = page.evaluate("() => document.querySelector('.js-plotly-plot').data.filter(t => t.showlegend !== false).map(t => t.name)")
    assert names == ["CCE (n=2)", "MAE (n=2)"], names
    # The next step is a link of its own.
    page.get_by_role("button", name="Next step").click()
    page.get_by_role("heading", name="Step 3 of 5: Lq sits between them, set by q").wait_for()
    assert "step=3" in page.url


# --- sweeps -------------------------------------------------------------------------------------
def test_a_sweep_submitted_through_the_client_gets_its_summary_chart(lab, client, page):
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=8)
    specs = [base.with_loss("lq", q=q, seed=s) for q in (0.2, 0.5, 0.8) for s in (0, 1)] + [base.with_loss(loss, seed=s) for loss in ("cce", "mae") for s in (0, 1)]
    group, ids = client.submit_group(specs, group="e2e q sweep")
    wait_until("the sweep to finish", lambda: all(client.get(i).status == RunStatus.COMPLETED for i in ids), 300)
    open_page(page, f"{lab.url}/sweep?group={group.replace(' ', '+')}", "Sweep")
    page.locator(".js-plotly-plot").first.wait_for()  # the fragment draws it after the page's run
    assert_charts_titled(page, 1)
    traces = page.evaluate("() => document.querySelector('.js-plotly-plot')._fullData.map(t => [t.name || '', (t.x || []).length, !!(t.error_y && t.error_y.visible), t.yaxis || 'y'])")
    lq = next(t for t in traces if t[0].startswith("Lq"))
    assert lq == ["Lq (n=2)", 3, True, "y"], traces
    assert any(t[0].startswith("CCE (n=2, no q)") for t in traces) and any(t[0].startswith("MAE (n=2, no q)") for t in traces)
    assert any(t[3] == "y2" for t in traces), "the bound is not overlaid"
    assert_clean(page)
    shot(page, "13-sweep-q")


# --- filters and zoom ---------------------------------------------------------------------------
def test_filters_say_how_many_runs_they_show(lab, client, page):
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=2)  # runs of its own: order-free
    _, ids = client.submit_group([base.with_loss(loss) for loss in ("cce", "mae")], group="e2e filters")
    wait_until("the filters' runs", lambda: all(client.get(i).status.is_final for i in ids), 120)
    total = client.count_runs()
    cce = sum(r.spec.loss == "cce" for r in client.list_runs(limit=1000))
    open_page(page, f"{lab.url}/compare?f.loss=cce", "Compare runs")
    page.get_by_text(f"Showing {cce} of {total} runs").wait_for()
    assert_clean(page)
    shot(page, "14-compare-filtered")
    open_page(page, f"{lab.url}/runs?f.loss=mae", "Runs")
    mae = sum(r.spec.loss == "mae" for r in client.list_runs(limit=1000))
    page.get_by_text(f"Showing {mae} of {total} runs").wait_for()
    assert_clean(page)
    shot(page, "15-runs-filtered")
    open_page(page, f"{lab.url}/runs?f.loss=nope", "Runs")  # a shared link's filter that no run matches
    page.get_by_text("The link's filter loss = nope matches no run here, so it was left out.").wait_for()
    page.get_by_text(f"All {total} runs").wait_for()


def test_compare_keeps_its_zoom_while_runs_train(lab, client, page):
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=1000)  # still training when the test ends
    _, ids = client.submit_group([base.with_loss(loss) for loss in ("cce", "lq")], group="e2e zoom")
    try:
        wait_until("a few epochs", lambda: min(client.get(i).epochs_done for i in ids) >= 3, 120)
        open_page(page, f"{lab.url}/compare?runs={','.join(ids)}", "Compare runs")
        wait_until("axes on the chart", lambda: len(axis_ticks(page)) == 3 and len(axis_ticks(page)[0]) > 1, 60)
        assert chart_texts(page, "legend-label") == ["CCE (n=1)", "Lq q=0.7 (n=1)"]
        same, zoomed, detail_x, overview_x = zoom_and_wait_for_epochs(
            page, lambda: sum(client.get(i).epochs_done for i in ids))
        shot(page, "17-compare-zoomed")
    finally:
        for i in ids:
            client.cancel(i)
    assert same == "same", "the chart was re-created instead of updated in place"
    assert detail_x == zoomed, f"the refresh reset the zoom: {zoomed} -> {detail_x}"
    assert max(map(float, overview_x)) > max(map(float, detail_x)), f"the zoom did not narrow the chart: {overview_x} vs {detail_x}"
    assert all(float(t).is_integer() for t in detail_x + overview_x), "an epoch tick that is not a whole epoch"


# --- 500 runs -----------------------------------------------------------------------------------
def test_pages_render_with_500_runs_in_the_store(browser, tmp_path):
    """Render times with 500 finished runs (no worker: the runs are written as a worker would)."""
    home = tmp_path / "big"
    home.mkdir()
    big = LabClient(f"sqlite:///{home / 'gce_lab.db'}")
    base = from_preset("quick", "digits", noise="uniform", epochs=10)
    specs = [base.with_loss(loss, q=q, noise_rate=rate, seed=seed) for loss in ("cce", "mae", "lq", "truncated_lq")
             for q in (0.3, 0.7) for rate in (0.2, 0.4) for seed in range(32)][:500]
    for start in range(0, len(specs), 100):  # 100 at a time: the store's limit of queued runs per owner is 200
        big.submit_group(specs[start:start + 100], group=f"batch {start // 100}")
        train_queued(big)
    assert big.count_runs() == 500
    server = Server(home, "views-500", worker=False)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(120_000)
    times = {}
    try:
        for path, heading in {**PAGES, "/compare?group=batch+0": "Compare runs", "/sweep?group=batch+0": "Sweep"}.items():
            start = time.monotonic()
            open_page(page, server.url + path, heading)
            times[path] = round(time.monotonic() - start, 2)
            assert_clean(page)
        shot(page, "16-sweep-500-runs")
        start = time.monotonic()  # the first page above also paid the server's first script run (imports)
        open_page(page, server.url + "/", PAGES["/"])
        times["/ (again, server warm)"] = round(time.monotonic() - start, 2)
    finally:
        (ARTIFACTS / "render-times-500.json").write_text(json.dumps({
            "runs in the store": big.count_runs(), "seconds from navigation to the page's script run finished": times,
            "machine": f"{sys.platform}, load average {__import__('os').getloadavg()[0]:.2f}",
        }, indent=2))
        context.close()
        server.stop()
