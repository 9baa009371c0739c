"""Browser test plumbing: the store client and the browser every e2e module shares (each module
brings its own ``home`` and ``lab``), and a screenshot of the page at the moment a test fails."""

from __future__ import annotations

import pytest

from jobs.client import LabClient


@pytest.fixture(scope="module")
def client(home, lab) -> LabClient:
    """A client of the module's lab's store."""
    return LabClient(f"sqlite:///{home / 'gce_lab.db'}")


@pytest.fixture(scope="module")
def browser(home):
    """Debian's chromium, headless, for one module (``home`` skips when chromium is missing)."""
    from playwright.sync_api import sync_playwright

    from tests.e2e.test_lab_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        page = item.funcargs.get("page")
        if page is not None:
            from tests.e2e.test_lab_browser import ARTIFACTS

            try:
                page.screenshot(path=str(ARTIFACTS / f"FAILED-{item.name}.png"))
            except Exception as exc:  # the browser may be gone; the report matters more
                report.sections.append(("failure screenshot", f"not taken: {exc}"))
