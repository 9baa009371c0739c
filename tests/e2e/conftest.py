"""Browser test plumbing: a screenshot of the page at the moment a test fails."""

from __future__ import annotations

import pytest


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
