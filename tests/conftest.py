"""Shared fixtures.

``lab_home``: an empty lab home in tmp_path ($GCE_LAB_HOME), with every other GCE_LAB_* variable
cleared (but GCE_LAB_DATA, the data folder) so the developer's own settings never leak into a
test.
``store_url``: a fresh database for the job runner, one per backend in STORE_BACKENDS; the store
contract suite runs once per backend.
"""

import os

import pytest

# Database backends the store contract suite runs against. Add "postgresql" (reading its URL from
# an environment variable, skipping when unset) to run the same suite there.
STORE_BACKENDS = ["sqlite"]


@pytest.fixture
def lab_home(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("GCE_LAB_") and name != "GCE_LAB_DATA":
            monkeypatch.delenv(name)
    home = tmp_path / "lab"
    home.mkdir()
    monkeypatch.setenv("GCE_LAB_HOME", str(home))
    return home


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request, lab_home):
    if request.param == "sqlite":
        return f"sqlite:///{lab_home / 'gce_lab.db'}"
    raise NotImplementedError(f"no fixture for store backend {request.param!r}")
