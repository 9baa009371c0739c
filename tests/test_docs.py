"""The docs stay true to the code: every spec field and metric key is documented."""

from pathlib import Path

from gce_core.metrics import EPOCH_KEYS
from gce_core.spec import RunSpec

ROOT = Path(__file__).resolve().parents[1]


def test_every_spec_field_is_in_the_library_doc():
    text = (ROOT / "docs" / "library.md").read_text()
    missing = [name for name in RunSpec.model_fields if f"`{name}`" not in text]
    assert not missing, f"document these RunSpec fields in docs/library.md: {missing}"


def test_every_metric_key_is_in_the_library_doc():
    text = (ROOT / "docs" / "library.md").read_text()
    missing = [key for key in EPOCH_KEYS if f"`{key}`" not in text]
    assert not missing, f"document these metric keys in docs/library.md: {missing}"


def test_readme_has_exactly_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
