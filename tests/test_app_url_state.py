"""app.url_state: URL parameters <-> page state, tolerant of hand-edited links."""

from __future__ import annotations

from app import launch_form as lf
from app import url_state as us


def test_readers_fall_back_on_junk():
    p = {"metric": "nope", "c": "ten", "k": "2", "teach": "1", "q": "0.3,abc,0.7,0.3", "runs": "a1b2, #c3d4,,a1b2,<x>"}
    assert us.get_str(p, "metric", "test_acc", ["test_acc", "val_acc"]) == "test_acc"
    assert us.get_int(p, "c", 10, 2, 1000) == 10
    assert us.get_float(p, "k", 0.5, 0.05, 0.95) == 0.5
    assert us.get_bool(p, "teach") is True and us.get_bool(p, "missing") is False
    assert us.get_floats(p, "q", [0.7], 0.1, 1.0) == [0.3, 0.7]
    assert us.get_ids(p) == ["a1b2", "c3d4"]
    assert us.get_list({"s": "running,bogus,queued"}, "s", [], ["queued", "running"]) == ["running", "queued"]
    assert us.get_str({"x": ["a", "b"]}, "x", "z") == "b"  # repeated parameter: the last one


def test_launch_round_trip_keeps_only_differences():
    choices = lf.with_values(lf.choices_from_preset("quick"), noise="class_dependent", noise_rate=0.3, losses=["lq", "truncated_lq"], lr_milestones=[20, 30])
    params = us.launch_to_params("quick", choices)
    assert params == {"preset": "quick", "noise": "class_dependent", "rate": "0.3", "losses": "lq,truncated_lq", "ms": "20,30"}
    preset, back = us.launch_from_params(params)
    assert preset == "quick" and back == choices


def test_launch_from_params_ignores_wrong_types_but_keeps_out_of_range_values():
    preset, choices = us.launch_from_params({"preset": "paper_cifar10", "epochs": "many", "q": "7"})
    assert preset == "paper_cifar10"
    assert choices.epochs == 120  # unparsable: the preset's value
    assert choices.q == 7.0  # parsable: kept, so the form shows the spec's own message
    assert us.launch_from_params({"preset": "bogus"})[0] == lf.DEFAULT_PRESET


def test_fmt_and_non_default():
    assert us.fmt([0.3, 0.7]) == "0.3,0.7" and us.fmt(True) == "1" and us.fmt(0.50) == "0.5"
    assert us.non_default({"a": 1, "b": 2, "c": None}, {"a": 1}) == {"b": "2"}
