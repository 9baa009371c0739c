"""app.url_state: URL parameters <-> page state, tolerant of hand-edited links."""

from __future__ import annotations

import math

import pytest

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
    values = {**lf.defaults(), "noise": "class_dependent", "noise_rate": 0.3, "losses": ("lq", "truncated_lq"),
              "lr_milestones": (20, 30), "truncated_lq.k": 0.6, "sweep": "q", "sweep_values": (0.1, 0.7)}
    params = us.launch_to_params("quick", values)
    assert params == {"preset": "quick", "noise": "class_dependent", "rate": "0.3", "losses": "lq,truncated_lq",
                      "ms": "20,30", "truncated_lq.k": "0.6", "sweep": "q", "values": "0.1,0.7"}
    assert us.launch_from_params(params) == ("quick", values, [])


def test_every_knob_round_trips_through_the_url():
    """Each value of the form, changed alone, comes back from its link unchanged."""
    base = lf.defaults("quick", "cifar10")
    other = {"bool": lambda k, v: not v, "int": lambda k, v: int(k.low) + 1 if math.isfinite(k.low) else 3,
             "float": lambda k, v: 0.7 * k.low + 0.3 * k.high if math.isfinite(k.low + k.high) else v + (0.25 if math.isinf(k.high) else -0.25),
             "choice": lambda k, v: next(c for c in reversed(k.choices) if c != v),
             "multi": lambda k, v: k.choices[-2:], "text": lambda k, v: "a b&c=d", "ints": lambda k, v: (3, 5),
             "floats": lambda k, v: (0.25, 0.5)}
    for key, knob in lf.knobs(base).items():
        if key == "dataset":
            continue
        values = {**base, key: other[knob.kind](knob, base[key])}
        if key == "class_map":
            values[key] = "cifar10"
        params = us.launch_to_params("quick", values)
        assert len(params) == 3, (key, params)  # preset, ds and this one
        assert us.launch_from_params(params) == ("quick", values, []), key


def test_old_links_still_work():
    preset, values, notes = us.launch_from_params({"preset": "paper_cifar10", "q": "0.3", "k": "0.6", "losses": "gce,ce"})
    assert (preset, values["dataset"], values["model"], notes) == ("paper", "cifar10", "resnet34", [])
    assert values["losses"] == ("lq", "cce")  # aliases
    assert values["lq.q"] == values["truncated_lq.q"] == values["agce.q"] == 0.3 and values["truncated_lq.k"] == 0.6
    _, values, _ = us.launch_from_params({"q": "0.3", "lq.q": "0.5"})
    assert values["lq.q"] == 0.5 and values["truncated_lq.q"] == 0.3  # the loss's own key wins


# The cases and more: each shows the form with one line naming the parameter and its range.
BAD_LINKS = [
    ({"rate": "2"}, "noise_rate", 0.85, "Link parameter rate=2: Noise rate η must be in [0, 0.85] for uniform (to the other c-1 classes) noise; set to 0.85."),
    ({"noise": "class_dependent", "rate": "0.6"}, "noise_rate", 0.45, "Link parameter rate=0.6: Noise rate η must be in [0, 0.45] for class-dependent (pair flips) noise; set to 0.45."),
    ({"rate": "abc"}, "noise_rate", 0.4, "Link parameter rate=abc: Noise rate η must be a number in [0, 0.85]; kept 0.4."),
    ({"epochs": "abc"}, "epochs", 60, "Link parameter epochs=abc: Epochs must be a whole number in [1, 5000]; kept 60."),
    ({"epochs": "0"}, "epochs", 1, "Link parameter epochs=0: Epochs must be in [1, 5000]; set to 1."),
    ({"epochs": "1e9"}, "epochs", 60, "Link parameter epochs=1e9: Epochs must be a whole number in [1, 5000]; kept 60."),
    ({"loss": "nope"}, "losses", ("cce", "mae", "lq"), "Link parameter loss=nope: Losses to compare has no 'nope'"),
    ({"losses": "sce,nope"}, "losses", ("sce",), "Link parameter losses=sce,nope: Losses to compare has no 'nope'"),
    ({"lq.q": "0"}, "lq.q", 0.7, "Link parameter lq.q=0: Lq (GCE) q must be in (0, 1]; kept 0.7."),
    ({"q": "7"}, "lq.q", 1.0, "Link parameter q=7: Lq (GCE) q and truncated Lq q must be in (0, 1]; set to 1."),
    ({"sce.alpha": "-1"}, "sce.alpha", 0.0, "Link parameter sce.alpha=-1: SCE alpha must be in [0, inf); set to 0."),
    ({"lr": "0"}, "lr", 0.1, "Link parameter lr=0: Learning rate must be in (0, 10]; kept 0.1."),
    ({"lr": "nan"}, "lr", 0.1, "Link parameter lr=nan: Learning rate must be a finite number in (0, 10]; kept 0.1."),
    ({"subset": "5"}, "train_subset", 20, "Link parameter subset=5: Training subset (0 = all) must be in [20, inf); set to 20."),
    ({"aug": "maybe"}, "augment", False, "Link parameter aug=maybe: Augment must be 1 (on) or 0 (off); kept off."),
    ({"opt": "lbfgs"}, "optimizer", "sgd", "Link parameter opt=lbfgs: Optimiser must be one of sgd, adam; kept sgd."),
    ({"ms": "forty"}, "lr_milestones", (), "Link parameter ms=forty: LR milestones (epochs) must be whole numbers separated by commas"),
    ({"seeds": "99"}, "seeds", 10, "Link parameter seeds=99: Seeds per loss must be in [1, 10]; set to 10."),
    ({"sweep": "zeta"}, "sweep", "", "Link parameter sweep=zeta: Sweep over must be one of noise_rate, q, k"),
    ({"map": "cifar100_blocks"}, "class_map", None, "Link parameter map=cifar100_blocks: Class map must be one of cifar10, fashion_mnist, next_class for digits"),
    ({"preset": "bogus"}, "epochs", 60, "Link parameter preset=bogus: Preset must be one of quick, paper; kept quick."),
    ({"ds": "imagenet"}, "dataset", "digits", "Link parameter ds=imagenet: Data set must be one of digits"),
    ({"name": "x" * 250}, "name", "x" * 200, "Link parameter name=" + "x" * 60 + ": Run name (optional) must be at most 200 characters"),
]


@pytest.mark.parametrize(("params", "key", "value", "note"), BAD_LINKS, ids=[str(p) for p, *_ in BAD_LINKS])
def test_a_bad_link_value_is_clamped_or_refused_with_one_line(params, key, value, note):
    _, values, notes = us.launch_from_params(params)
    assert values[key] == value
    assert len(notes) == 1 and notes[0].startswith(note) and "\n" not in notes[0]
    specs, problems = lf.build_specs(values)
    assert problems == [] and specs  # the form it shows can launch


def test_good_values_in_range_pass_silently():
    _, values, notes = us.launch_from_params({"q": "0.01", "rate": "0.85", "map": "none", "subset": "none"})
    assert notes == [] and values["lq.q"] == 0.01 and values["noise_rate"] == 0.85


@pytest.mark.parametrize("junk", ["", "abc", "-1e309", "nan", "1,2,x", "none", "[x](http://e.org)", "0x10", "-0"])
def test_junk_in_every_parameter_never_raises(junk):
    for key in us.launch_keys():
        _, values, notes = us.launch_from_params({key: junk})
        assert all(isinstance(n, str) and "\n" not in n for n in notes)
        lf.build_specs(values)  # values of the right types: no exception


def test_fmt_and_non_default():
    assert us.fmt([0.3, 0.7]) == "0.3,0.7" and us.fmt(True) == "1" and us.fmt(0.50) == "0.5"
    assert us.fmt(0.1234567) == "0.1234567" and us.fmt(None) == "none"  # floats round-trip exactly
    assert us.non_default({"a": 1, "b": 2, "c": None}, {"a": 1}) == {"b": "2"}
