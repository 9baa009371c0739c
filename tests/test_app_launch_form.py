"""app.launch_form: the form generated from the run spec and the loss registry; values -> specs,
sweeps, problems in the form's words, noise preview, data check, time estimate, session cap."""

from __future__ import annotations

import math
from typing import Literal

import pytest
import torch
from pydantic import Field

from app import launch_form as lf
from app import url_state as us
from gce_core.losses import LOSSES, Loss, Param
from gce_core.models import MODEL_NAMES
from gce_core.noise import NOISE_KINDS
from gce_core.spec import PRESETS, RunSpec, from_preset, preset_fields
from tests.fake_datasets import write_cifar10, write_cifar100, write_fashion_mnist


def quick(**changes):
    return {**lf.defaults("quick", "digits"), **changes}


# --- generated from the spec and the registry ------------------------------------------------------
def test_every_spec_field_but_the_excluded_ones_is_a_knob_with_the_spec_range():
    ks = lf.knobs()
    params = set(lf.loss_param_names())
    for name, info in RunSpec.model_fields.items():
        if name in lf.NOT_IN_FORM or name in params:
            assert name not in ks
            continue
        assert ks[name].default == info.default and ks[name].help == info.description
    assert (ks["epochs"].kind, ks["epochs"].low, ks["epochs"].high) == ("int", 1, 5000)
    assert ks["lr"].range_text == "(0, 10]" and ks["noise_rate"].range_text == "[0, 1)"
    assert ks["train_subset"].optional and ks["train_subset"].low == 20
    assert ks["optimizer"].choices == ("sgd", "adam")  # from the Literal
    assert ks["model"].choices == MODEL_NAMES and ks["noise"].choices == NOISE_KINDS
    assert ks["lr_milestones"].kind == "ints" and ks["augment"].kind == "bool"


def test_every_loss_of_the_registry_and_each_of_its_params_is_in_the_form():
    ks = lf.knobs()
    assert ks["losses"].choices == tuple(LOSSES)
    for name, loss in LOSSES.items():
        assert ks["losses"].choice_label(name) == loss.label
        for p in loss.params:
            knob = ks[f"{name}.{p.name}"]
            assert (knob.default, knob.low, knob.high, knob.low_open, knob.high_open) == (p.default, p.low, p.high, p.low_open, p.high_open)
            assert knob.range_text == p.range_text and knob.help == p.help
    # each loss keeps its own values: sce's beta and bootstrapping's beta differ
    assert ks["sce.beta"].default == 1.0 and ks["bootstrap_soft.beta"].default == 0.95
    assert ks["agce.q"].high == math.inf and ks["lq.q"].high == 1.0


@pytest.mark.parametrize("loss", list(LOSSES))
def test_each_loss_with_changed_params_round_trips_through_the_url_into_its_specs(loss):
    values = quick(losses=(loss,))
    changed = {}
    for p in LOSSES[loss].params:
        lo = p.low if math.isfinite(p.low) else p.default - 2
        hi = p.high if math.isfinite(p.high) else p.default + 2
        changed[p.name] = round(lo + 0.3 * (hi - lo), 3)  # inside the range, not the default
        values[f"{loss}.{p.name}"] = changed[p.name]
    params = us.launch_to_params("quick", values)
    for name, value in changed.items():
        assert params[f"{loss}.{name}"] == us.fmt(value)
    preset, back, notes = us.launch_from_params(params)
    assert (preset, notes) == ("quick", []) and back == values
    specs, problems = lf.build_specs(back)
    assert problems == [] and len(specs) == 1
    assert specs[0].loss == loss and specs[0].loss_params() == changed


def test_a_new_loss_with_a_new_parameter_needs_no_form_change(monkeypatch):
    toy = Loss("toy", "Toy loss", "tau (1 - f_y)", lambda logits, y, tau: tau * logits[:, 0], "a test",
               params=(Param("tau", 2.0, 1.0, 5.0, help="toy scale"),))
    monkeypatch.setitem(LOSSES, "toy", toy)
    ks = lf.knobs()
    assert "toy" in ks["losses"].choices and ks["losses"].choice_label("toy") == "Toy loss"
    assert (ks["toy.tau"].default, ks["toy.tau"].range_text, ks["toy.tau"].label) == (2.0, "(1, 5)", "Toy loss tau")
    assert "tau" in ks["sweep"].choices and "toy.tau" in us.launch_keys() and "tau" in us.launch_keys()
    _, values, notes = us.launch_from_params({"losses": "toy,lq", "toy.tau": "3.5"})
    assert values["losses"] == ("toy", "lq") and values["toy.tau"] == 3.5 and notes == []
    assert us.launch_to_params("quick", values)["toy.tau"] == "3.5"
    _, values, notes = us.launch_from_params({"toy.tau": "9"})
    assert values["toy.tau"] == 2.0
    assert notes == ["Link parameter toy.tau=9: Toy loss tau must be in (1, 5); kept 2."]


def test_a_new_spec_field_needs_no_form_change(monkeypatch):
    class Wider(RunSpec):
        precision: Literal["fp32", "bf16"] = Field("fp32", description="training precision")
        warmup: int = Field(0, ge=0, le=50, description="warm-up epochs")

    monkeypatch.setattr(lf, "RunSpec", Wider)
    ks = lf.knobs()
    assert ks["precision"].choices == ("fp32", "bf16") and ks["precision"].help == "training precision"
    assert (ks["warmup"].kind, ks["warmup"].range_text) == ("int", "[0, 50]")
    assert lf.defaults()["precision"] == "fp32"
    _, values, notes = us.launch_from_params({"precision": "bf16", "warmup": "80"})
    assert values["precision"] == "bf16" and values["warmup"] == 50
    assert notes == ["Link parameter warmup=80: Warmup must be in [0, 50]; set to 50."]
    assert us.launch_to_params("quick", values) == {"preset": "quick", "precision": "bf16", "warmup": "50"}


# --- presets ----------------------------------------------------------------------------------
def test_quick_preset_builds_the_demo_comparison_from_gce_cores_preset():
    specs, problems = lf.build_specs(lf.defaults("quick", "digits"))
    assert problems == []
    assert [s.loss for s in specs] == ["cce", "mae", "lq"]
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4)
    for spec in specs:
        assert (spec.noise, spec.noise_rate, spec.epochs) == ("uniform", 0.4, 60)
        assert spec.loss_params() == ({"q": 0.7} if spec.loss == "lq" else {})
        mine = {k: v for k, v in spec.to_dict().items() if k not in ("loss", *lf.loss_param_names())}
        assert mine == {k: v for k, v in base.to_dict().items() if k not in ("loss", *lf.loss_param_names())}


@pytest.mark.parametrize("dataset", list(PRESETS["paper"]))
def test_paper_preset_follows_the_protocol_on_each_data_set(dataset):
    specs, problems = lf.build_specs(lf.defaults("paper", dataset))
    assert problems == []
    assert len(specs) == 3 * 5 and {s.seed for s in specs} == {0, 1, 2, 3, 4}
    assert {s.loss for s in specs} == {"cce", "lq", "truncated_lq"}
    fields = preset_fields("paper", dataset)
    for key, value in fields.items():
        assert getattr(specs[0], key) == (tuple(value) if isinstance(value, list) else value)


def test_changing_the_data_set_loads_the_presets_fields_for_it():
    values = lf.with_dataset(quick(class_map="next_class", losses=("sce",)), "quick", "cifar10")
    assert (values["dataset"], values["model"], values["epochs"], values["train_subset"], values["augment"]) == ("cifar10", "cnn", 12, 10000, True)
    assert values["class_map"] is None and values["losses"] == ("sce",)  # the rest stays


def test_quick_demo_is_estimated_to_finish_in_under_a_minute_on_two_cpu_slots():
    specs, _ = lf.build_specs(lf.defaults())
    assert 5 < lf.total_seconds(specs, slots=2, kind="cpu") < 60


# --- values -> specs -----------------------------------------------------------------------------
def test_losses_times_seeds_from_the_first_seed():
    specs, problems = lf.build_specs(quick(losses=("lq", "truncated_lq"), seeds=3, seed=7))
    assert problems == []
    assert [(s.loss, s.seed) for s in specs] == [("lq", 7), ("lq", 8), ("lq", 9), ("truncated_lq", 7), ("truncated_lq", 8), ("truncated_lq", 9)]


def test_each_loss_gets_only_its_own_parameters():
    specs, _ = lf.build_specs(quick(losses=("sce", "bootstrap_soft", "lq"), **{"sce.beta": 0.5, "lq.q": 0.3}))
    sce, boot, lq = specs
    assert (sce.alpha, sce.beta, sce.A) == (0.1, 0.5, -4.0)
    assert boot.beta == 0.95 and boot.alpha is None  # its own default, not sce's beta
    assert lq.q == 0.3 and lq.beta is None


def test_problems_name_the_value_once_for_all_runs_in_the_forms_words():
    _, problems = lf.build_specs(quick(noise_rate=0.95, seeds=4))
    assert len(problems) == 1 and problems[0][0] == "noise_rate" and "1 - 1/c" in problems[0][1]
    _, problems = lf.build_specs(quick(**{"lq.q": 1.5}, seeds=3))
    assert problems == [("lq.q", "q must be in (0, 1], got 1.5")]
    assert lf.label_problem(*problems[0]) == "Lq (GCE) q: q must be in (0, 1], got 1.5"
    _, problems = lf.build_specs(quick(lr_milestones=(70,)))
    text = lf.label_problem(*problems[0])
    assert text.startswith("LR milestones (epochs) must be increasing epochs") and "lr_milestones" not in text


def test_no_loss_and_bad_seeds_are_problems():
    _, problems = lf.build_specs(quick(losses=()))
    assert problems[0][0] == "losses" and "pick at least one loss" in problems[0][1]
    _, problems = lf.build_specs(quick(seeds=0))
    assert problems == [("seeds", f"must be 1 to {lf.MAX_SEEDS}, got 0")]


def test_a_sweep_over_q_runs_each_value_per_seed_and_losses_without_q_once():
    values = quick(losses=("cce", "lq", "truncated_lq"), seeds=2, sweep="q", sweep_values=(0.1, 0.4, 1.0))
    specs, problems = lf.build_specs(values)
    assert problems == []
    assert [(s.loss, s.q, s.seed) for s in specs if s.loss != "cce"] == [
        (loss, q, seed) for loss in ("lq", "truncated_lq") for q in (0.1, 0.4, 1.0) for seed in (0, 1)]
    assert [s.seed for s in specs if s.loss == "cce"] == [0, 1]
    assert any("CCE takes no q" in n for n in lf.advice(values))


def test_a_sweep_over_noise_rate_or_k():
    specs, problems = lf.build_specs(quick(losses=("cce", "lq"), sweep="noise_rate", sweep_values=(0.0, 0.2, 0.6)))
    assert problems == [] and [(s.loss, s.noise_rate) for s in specs] == [(loss, r) for loss in ("cce", "lq") for r in (0.0, 0.2, 0.6)]
    specs, problems = lf.build_specs(quick(losses=("truncated_lq",), sweep="k", sweep_values=(0.3, 0.5)))
    assert problems == [] and [s.k for s in specs] == [0.3, 0.5]


def test_sweep_problems_name_the_values_and_the_range():
    _, problems = lf.build_specs(quick(losses=("lq",), sweep="q", sweep_values=(0.5, 1.5)))
    assert problems == [("sweep_values", "q must be in (0, 1], got 1.5")]
    _, problems = lf.build_specs(quick(losses=("cce",), sweep="q", sweep_values=(0.5,)))
    assert problems[0][0] == "sweep" and "none of the chosen losses takes q" in problems[0][1]
    _, problems = lf.build_specs(quick(sweep="noise_rate", sweep_values=()))
    assert problems[0][0] == "sweep_values"
    _, problems = lf.build_specs(quick(sweep="noise_rate", sweep_values=(0.2, 0.95)))
    assert [k for k, _ in problems] == ["sweep_values"] and "1 - 1/c" in problems[0][1]


def test_widget_values_convert_both_ways():
    ks = lf.knobs()
    assert lf.to_widget(ks["lr_milestones"], (40, 80)) == "40, 80"
    assert lf.from_widget(ks["lr_milestones"], "40; 80") == ((40, 80), None)
    value, problem = lf.from_widget(ks["lr_milestones"], "forty")
    assert value is None and "whole numbers separated by commas" in problem
    assert lf.from_widget(ks["sweep_values"], "0.1, 0.4,0.1") == ((0.1, 0.4), None)
    assert lf.to_widget(ks["train_subset"], None) == 0 and lf.from_widget(ks["train_subset"], 0) == (None, None)
    assert lf.to_widget(ks["class_map"], None) == "" and ks["class_map"].choice_label(None) == "(data set default)"
    assert lf.step(ks["lr"]) == pytest.approx(0.01) and lf.step(ks["sce.A"]) == 1.0


# --- noise -----------------------------------------------------------------------------------------
def test_the_rate_slider_stops_below_what_each_noise_accepts():
    assert lf.max_noise_rate("class_dependent", 10) == 0.45  # below 0.5
    assert lf.max_noise_rate("uniform", 10) == 0.85  # below 1 - 1/c = 0.9
    assert lf.max_noise_rate("uniform", 100) == 0.95
    knob = lf.knobs(quick(noise="class_dependent"))["noise_rate"]
    assert knob.range_text == "[0, 0.45]" and knob.why == "for class-dependent (pair flips) noise"


def test_noise_matrix_rows_sum_to_one_and_match_the_rate():
    m = lf.noise_matrix(quick())
    torch.testing.assert_close(m.sum(dim=1), torch.ones(10, dtype=torch.float64))
    assert lf.wrong_label_share(m) == pytest.approx(0.4)
    m = lf.noise_matrix(quick(noise="class_dependent", noise_rate=0.3))
    assert m[0, 1] == pytest.approx(0.3)  # digits -> next_class map
    with pytest.raises(ValueError, match=r"0\.5"):
        lf.noise_matrix(quick(noise="class_dependent", noise_rate=0.6))
    assert lf.class_map_choices("cifar100") == ["cifar100_blocks", "cifar100_superclass", "next_class"]


def test_truncation_that_never_starts_is_the_specs_problem_named_at_prune_start():
    _, problems = lf.build_specs(quick(losses=("truncated_lq",), epochs=20))
    assert [k for k, _ in problems] == ["prune_start"]
    assert lf.label_problem(*problems[0]).startswith("Prune start (epoch): truncated Lq prunes from epoch 40")
    assert lf.advice(quick()) == []


def test_changing_the_epochs_keeps_the_presets_schedule_at_the_same_fractions():
    values = lf.defaults("paper", "cifar10")
    shorter = lf.with_epochs(values, "paper", 12)
    assert (shorter["epochs"], shorter["lr_milestones"], shorter["prune_start"], shorter["prune_every"]) == (12, (4, 8), 4, 1)
    assert lf.build_specs(shorter)[1] == []
    mine = lf.with_epochs({**values, "lr_milestones": (50, 100)}, "paper", 110)
    assert mine["lr_milestones"] == (50, 100) and mine["prune_start"] == 37  # the user's stay
    assert lf.with_epochs(quick(), "quick", 30)["prune_start"] == 20  # 40 of 60


def test_a_preset_without_settings_for_the_data_set_says_why():
    assert lf.preset_note("quick", "digits") is None
    assert "the paper never ran the 8x8 digits" in lf.preset_note("paper", "digits")
    assert lf.defaults("paper", "digits")["dataset"] in PRESETS["paper"]


# --- data check ------------------------------------------------------------------------------------
def test_data_check_finds_the_files_without_reading_them(tmp_path):
    assert lf.data_problem("digits", tmp_path) is None  # embedded
    for name in ("cifar10", "cifar100", "fashion_mnist"):
        msg = lf.data_problem(name, tmp_path)
        assert msg and f"'{name}' was not found" in msg and "How to get it" in msg and str(tmp_path) in msg
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    write_fashion_mnist(tmp_path)
    assert [lf.data_problem(n, tmp_path) for n in ("cifar10", "cifar100", "fashion_mnist")] == [None, None, None]
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    assert "1 of its 6 files are missing" in lf.data_problem("cifar10", tmp_path)


# --- estimate and cap ------------------------------------------------------------------------------
def test_estimate_grows_with_epochs_and_shrinks_with_slots():
    specs, _ = lf.build_specs(quick(seeds=4))
    one, four = lf.total_seconds(specs, 1), lf.total_seconds(specs, 4)
    assert four < one and one == pytest.approx(sum(lf.run_seconds(s) for s in specs))
    longer, _ = lf.build_specs(quick(epochs=400))
    assert lf.run_seconds(longer[0]) > lf.run_seconds(specs[0])
    paper = lf.build_specs(lf.defaults("paper", "cifar10"))[0][0]
    assert lf.run_seconds(paper, "cuda") < lf.run_seconds(paper, "cpu")
    assert lf.device_kind(["cuda:0"]) == "cuda" and lf.device_kind(["cpu"]) == "cpu"
    long, _ = lf.build_specs(quick(epochs=5000, seeds=3))
    assert lf.total_seconds(long, 1) > lf.CONFIRM_SECONDS  # asks for a confirmation
    assert lf.fingerprint(long) != lf.fingerprint(specs) and lf.fingerprint(specs) == lf.fingerprint(list(specs))


@pytest.mark.parametrize(("seconds", "text"), [(0.2, "1 s"), (42, "42 s"), (600, "10 min"), (3 * 3600, "3 h"), (2.5 * 3600, "2.5 h"), (30 * 3600, "30 h"), (260 * 86400, "260 days")])
def test_format_duration(seconds, text):
    assert lf.format_duration(seconds) == text


def test_session_cap_says_how_many_runs_are_over():
    assert lf.session_cap_problem(active=0, new=3, cap=24) is None
    assert lf.session_cap_problem(active=21, new=3, cap=24) is None
    msg = lf.session_cap_problem(active=22, new=3, cap=24)
    assert msg.startswith("1 run(s) over your cap: this browser has 22") and "at most 2 more" in msg
