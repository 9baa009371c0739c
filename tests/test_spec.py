"""RunSpec validation: refused once, at the boundary, naming the field."""

import json

import pytest

from gce_core.spec import RunSpec, SpecError, from_preset, load_stored_spec, parse_spec


def problems(data):
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return dict(info.value.problems)


def test_defaults_are_valid_and_round_trip_through_json():
    spec = RunSpec()
    assert spec.dataset == "digits" and spec.loss == "lq" and spec.q == 0.7
    assert parse_spec(spec.to_json()) == spec


def test_alias_gce_is_stored_as_lq():
    assert parse_spec({"loss": "gce"}).loss == "lq"


@pytest.mark.parametrize(
    "data, field, fragment",
    [
        ({"q": 0}, "q", "(0, 1]"),
        ({"q": 1.5}, "q", "(0, 1]"),
        ({"k": 1}, "k", "(0, 1)"),
        ({"dataset": "imagenet"}, "dataset", "allowed"),
        ({"loss": "focal"}, "loss", "allowed"),
        ({"model": "vgg"}, "model", "allowed"),
        ({"epochs": 10**7}, "epochs", "less than or equal to 5000"),
        ({"epochs": "many"}, "epochs", "integer"),
        ({"batch_size": 0}, "batch_size", "greater than or equal to 1"),
        ({"noise": "gaussian"}, "noise", "allowed"),
        ({"device": "tpu"}, "device", "auto, cpu, cuda"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_bad_fields_are_named(data, field, fragment):
    found = problems(data)
    assert field in found, found
    assert fragment in found[field]


def test_noise_limits_depend_on_the_number_of_classes():
    assert "1 - 1/c" in str(problems({"noise": "uniform", "noise_rate": 0.9}))
    parse_spec({"dataset": "cifar100", "noise": "uniform", "noise_rate": 0.9})  # 0.9 < 0.99
    assert "0.5" in str(problems({"noise": "class_dependent", "noise_rate": 0.5}))


def test_class_map_default_is_resolved_into_the_spec():
    spec = parse_spec({"dataset": "cifar10", "noise": "class_dependent", "noise_rate": 0.2})
    assert spec.class_map == "cifar10"
    assert parse_spec(spec.to_json()).class_map == "cifar10"


def test_milestones_must_lie_inside_the_run():
    assert "lr_milestones" in str(problems({"epochs": 10, "lr_milestones": [5, 12]}))
    assert "lr_milestones" in str(problems({"epochs": 10, "lr_milestones": [6, 3]}))
    assert parse_spec({"epochs": 10, "lr_milestones": [3, 6]}).lr_milestones == (3, 6)


def test_open_set_source_must_match_shapes():
    assert "cannot be mixed" in str(problems({"dataset": "digits", "noise": "open_set", "noise_rate": 0.2, "open_set_source": "cifar10"}))


def test_presets_follow_the_paper():
    paper = from_preset("paper", "cifar10")
    assert (paper.model, paper.epochs, paper.lr_milestones) == ("resnet34", 120, (40, 80))
    assert (paper.lr, paper.momentum, paper.weight_decay, paper.batch_size) == (0.01, 0.9, 1e-4, 128)
    c100 = from_preset("paper", "cifar100")
    assert (c100.epochs, c100.lr_milestones, c100.prune_start) == (150, (80, 120), 80)
    assert from_preset("quick", "digits", loss="cce").loss == "cce"
    with pytest.raises(SpecError, match="preset"):
        from_preset("fast")


def test_spec_is_frozen():
    with pytest.raises(Exception, match="frozen"):
        RunSpec().q = 0.5


def test_a_stored_spec_is_read_back_without_validation():
    """A spec that the current validator refuses (q out of range, a field since removed, an
    older field set) still lists: unknown keys dropped, missing keys at their defaults."""
    text = '{"loss": "lq", "q": 5.0, "fused_share": 3, "lr_milestones": [3, 6], "epochs": 2}'
    assert "fused_share" in problems(text) and "q" in problems(text.replace('"fused_share": 3, ', ""))  # parse_spec refuses it
    spec = load_stored_spec(text)
    assert (spec.loss, spec.q, spec.epochs) == ("lq", 5.0, 2)
    assert spec.lr_milestones == (3, 6)  # a tuple, as validation would make it
    assert not hasattr(spec, "fused_share")
    assert (spec.dataset, spec.k, spec.seed, spec.compile) == ("digits", 0.5, 0, False)  # defaults
    assert load_stored_spec(spec.to_json()) == spec


def test_a_stored_spec_round_trips_a_valid_spec_and_refuses_what_is_not_an_object():
    spec = parse_spec({"dataset": "cifar10", "noise": "class_dependent", "noise_rate": 0.2})
    assert load_stored_spec(spec.to_json()) == spec
    for text in ("[1, 2]", "{not json"):
        with pytest.raises(SpecError, match="spec"):
            load_stored_spec(text)


# --- every registry loss, with its parameters ------------------------------------------------
def test_a_loss_parameter_is_saved_with_the_losss_other_defaults():
    spec = parse_spec({"loss": "sce", "alpha": 0.5})
    assert (spec.alpha, spec.beta, spec.A) == (0.5, 1.0, -4.0)
    assert (spec.a, spec.p, spec.q, spec.k) == (None, None, None, 0.5)  # not sce's: left as they are
    assert json.loads(spec.to_json())["alpha"] == 0.5 and json.loads(spec.to_json())["beta"] == 1.0
    assert spec.loss_params() == {"alpha": 0.5, "beta": 1.0, "A": -4.0}
    assert spec.label() == "sce alpha=0.5 beta=1 A=-4 | clean | seed 0"
    assert parse_spec(spec.to_json()) == spec


def test_each_loss_takes_exactly_its_own_parameters_with_its_defaults():
    assert parse_spec({"loss": "bootstrap_soft"}).loss_params() == {"beta": 0.95}
    assert parse_spec({"loss": "bootstrap_hard"}).loss_params() == {"beta": 0.8}
    assert parse_spec({"loss": "nce_rce"}).loss_params() == {"alpha": 1.0, "beta": 1.0, "A": -4.0}
    assert parse_spec({"loss": "aul"}).loss_params() == {"a": 5.5, "p": 3.0}
    assert parse_spec({"loss": "agce", "a": 1.8, "q": 3.0}).loss_params() == {"a": 1.8, "q": 3.0}  # q > 0 for AGCE
    assert parse_spec({"loss": "lq"}).loss_params() == {"q": 0.7}
    assert parse_spec({"loss": "truncated_lq", "alpha": 0.3}).loss_params() == {"q": 0.7, "k": 0.5}
    assert parse_spec({"loss": "cce"}).loss_params() == {}
    assert parse_spec({"loss": "truncated_lq"}).label() == "truncated_lq q=0.7 k=0.5 | clean | seed 0"


@pytest.mark.parametrize(
    "data, field, message",
    [
        ({"loss": "sce", "alpha": -1}, "alpha", "alpha must be in [0, inf), got -1.0"),
        ({"loss": "bootstrap_soft", "beta": 1.5}, "beta", "beta must be in [0, 1], got 1.5"),
        ({"loss": "aul", "a": 1}, "a", "a must be in (1, inf), got 1.0"),
        ({"loss": "nce_rce", "A": 1}, "A", "A must be in (-inf, 0), got 1.0"),
        ({"loss": "cce", "q": 2}, "q", "q must be in (0, 1], got 2.0"),  # q stays a valid Lq exponent
    ],
)
def test_an_out_of_range_loss_parameter_is_one_line_naming_it_and_its_range(data, field, message):
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert str(info.value) == f"{field}: {message}"


def test_an_old_stored_spec_loads_unchanged():
    old = parse_spec({"loss": "truncated_lq", "q": 0.8}).to_dict()
    for name in ("alpha", "beta", "A", "a", "p"):
        del old[name]  # written before these fields existed
    assert load_stored_spec(json.dumps(old)) == parse_spec(old) == parse_spec({"loss": "truncated_lq", "q": 0.8})
    assert load_stored_spec(json.dumps(old)).label() == "truncated_lq q=0.8 k=0.5 | clean | seed 0"


def test_with_loss_resets_the_other_losses_parameters_and_keeps_q_and_k():
    sce = parse_spec(dict(loss="sce", alpha=0.2, q=0.4))
    assert sce.with_loss("sce", seed=3).alpha == 0.2 and sce.with_loss("sce", seed=3).seed == 3
    nce = sce.with_loss("nce_rce")
    assert (nce.alpha, nce.beta, nce.A, nce.q) == (1.0, 1.0, -4.0, 0.4)
    assert sce.with_loss("bootstrap_hard").beta == 0.8
    with pytest.raises(SpecError, match="loss"):
        sce.with_loss("nope")
