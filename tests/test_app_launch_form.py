"""app.launch_form: presets, form -> specs, problems, noise preview, time estimate, session cap."""

from __future__ import annotations

import pytest
import torch

from app import launch_form as lf
from gce_core.spec import from_preset


def test_quick_preset_builds_the_demo_comparison():
    choices = lf.choices_from_preset("quick")
    specs, problems = lf.build_specs(choices)
    assert problems == []
    assert [s.loss for s in specs] == ["cce", "mae", "lq"]
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=40)
    for spec in specs:
        assert spec.dataset == "digits" and spec.model == "mlp"
        assert (spec.noise, spec.noise_rate, spec.q) == ("uniform", 0.4, 0.7)
        # everything but the loss comes from gce_core's quick preset
        assert spec.model_copy(update={"loss": base.loss}) == base


def test_quick_demo_is_estimated_to_finish_in_under_a_minute_on_two_cpu_slots():
    specs, _ = lf.build_specs(lf.choices_from_preset("quick"))
    assert 5 < lf.total_seconds(specs, slots=2, kind="cpu") < 60


@pytest.mark.parametrize("key", [k for k in lf.PRESETS if k.startswith("paper")])
def test_paper_presets_follow_the_protocol(key):
    specs, problems = lf.build_specs(lf.choices_from_preset(key))
    assert problems == []
    assert len(specs) == 3 * 5  # CCE, Lq, truncated Lq x 5 seeds
    assert {s.seed for s in specs} == {0, 1, 2, 3, 4}
    spec = specs[0]
    assert (spec.optimizer, spec.lr, spec.momentum, spec.weight_decay, spec.batch_size) == ("sgd", 0.01, 0.9, 1e-4, 128)
    if key == "paper_cifar100":
        assert spec.epochs == 150 and spec.lr_milestones == (80, 120) and spec.prune_start == 80
    else:
        assert spec.epochs == 120 and spec.lr_milestones == (40, 80)


def test_losses_times_seeds():
    choices = lf.with_values(lf.choices_from_preset("quick"), losses=["lq", "truncated_lq"], seeds=3, first_seed=7)
    specs, problems = lf.build_specs(choices)
    assert problems == []
    assert [(s.loss, s.seed) for s in specs] == [("lq", 7), ("lq", 8), ("lq", 9), ("truncated_lq", 7), ("truncated_lq", 8), ("truncated_lq", 9)]


def test_compile_goes_into_every_spec_and_the_url():
    from app import url_state as us

    choices = lf.with_values(lf.choices_from_preset("paper_cifar10"), compile=True)
    specs, problems = lf.build_specs(choices)
    assert problems == [] and len(specs) == 15 and all(s.compile for s in specs)
    params = us.launch_to_params("paper_cifar10", choices)
    assert params["compile"] == "1" and us.launch_from_params(params)[1] == choices
    assert not any(s.compile for s in lf.build_specs(lf.choices_from_preset("quick"))[0])


def test_problems_name_the_field_once_for_all_runs():
    choices = lf.with_values(lf.choices_from_preset("quick"), noise_rate=0.95, seeds=4)
    _, problems = lf.build_specs(choices)
    assert len(problems) == 1
    _, msg = problems[0]
    assert "1 - 1/c" in msg and "0.9" in msg


def test_no_loss_and_bad_milestones_are_problems():
    _, problems = lf.build_specs(lf.with_values(lf.choices_from_preset("quick"), losses=[]))
    assert problems and problems[0][0] == "losses"
    _, problems = lf.build_specs(lf.with_values(lf.choices_from_preset("quick"), lr_milestones=[50]))
    assert any(f == "spec" or "lr_milestones" in f + m for f, m in problems)
    assert lf.parse_milestones("40, 80") == ((40, 80), None)
    assert lf.parse_milestones("forty")[1] is not None


def test_advice_warns_when_truncation_never_starts():
    choices = lf.with_values(lf.choices_from_preset("quick"), losses=["truncated_lq"], epochs=20)
    assert any("prunes from epoch 27" in n for n in lf.advice(choices))  # 40 of 60 epochs, at 40 epochs
    assert lf.advice(lf.choices_from_preset("quick")) == []


def test_noise_matrix_rows_sum_to_one_and_match_the_rate():
    m = lf.noise_matrix(lf.choices_from_preset("quick"))
    assert m.shape == (10, 10)
    torch.testing.assert_close(m.sum(dim=1), torch.ones(10, dtype=torch.float64))
    assert lf.wrong_label_share(m) == pytest.approx(0.4)
    pair = lf.with_values(lf.choices_from_preset("quick"), noise="class_dependent", noise_rate=0.3)
    m = lf.noise_matrix(pair)
    assert m[0, 1] == pytest.approx(0.3)  # digits -> next_class map
    with pytest.raises(ValueError, match=r"0\.5"):
        lf.noise_matrix(lf.with_values(pair, noise_rate=0.6))


def test_estimate_grows_with_epochs_and_shrinks_with_slots():
    specs, _ = lf.build_specs(lf.with_values(lf.choices_from_preset("quick"), seeds=4))
    one, four = lf.total_seconds(specs, 1), lf.total_seconds(specs, 4)
    assert four < one
    assert one == pytest.approx(sum(lf.run_seconds(s) for s in specs))
    longer, _ = lf.build_specs(lf.with_values(lf.choices_from_preset("quick"), epochs=400))
    assert lf.run_seconds(longer[0]) > lf.run_seconds(specs[0])
    paper = lf.build_specs(lf.choices_from_preset("paper_cifar10"))[0][0]
    assert lf.run_seconds(paper, "cuda") < lf.run_seconds(paper, "cpu")
    assert lf.device_kind(["cuda:0"]) == "cuda" and lf.device_kind(["cpu"]) == "cpu"


@pytest.mark.parametrize(("seconds", "text"), [(0.2, "1 s"), (42, "42 s"), (600, "10 min"), (3 * 3600, "3 h"), (2.5 * 3600, "2.5 h"), (30 * 3600, "30 h"), (260 * 86400, "260 days")])
def test_format_duration(seconds, text):
    assert lf.format_duration(seconds) == text


def test_session_cap():
    assert lf.session_cap_problem(active=0, new=3, cap=24) is None
    assert lf.session_cap_problem(active=21, new=3, cap=24) is None
    msg = lf.session_cap_problem(active=22, new=3, cap=24)
    assert msg and "at most 2 more" in msg
