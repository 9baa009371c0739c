"""Loss values and autograd gradients against float64 references, limits, gradients at extreme
logits, the per-run criterion, bad input; the registry (parameters, aliases, f_y forms, loss-sum
bounds) and the losses people compare GCE with.

The zoo's float64 references below are written from the papers' formulas. Each was also compared
with the public reference code (snapshots fetched for this; the differences are listed, and the
registry follows the papers unless said otherwise):

- SCE. YisenWang/symmetric_cross_entropy_for_noisy_labels@ec778df, loss.py
  ``symmetric_cross_entropy(alpha, beta)``: alpha * CE(p clipped to [1e-7, 1]) + beta *
  -sum_k p_k log(clip(e_y, 1e-4, 1)); CIFAR-10 alpha 0.1, beta 1.0 (train_models.py). The same in
  HanxunH/Active-Passive-Losses@04bce53, loss.py ``SCELoss`` (configs/cifar10/sym/sce.yaml: alpha
  0.1, beta 1.0). Differences: the clip makes log 0 = ln(1e-4) = -9.21, not the paper's A = -4
  (registry default -4; ``A=math.log(1e-4)`` reproduces the code: a 2.3x heavier RCE term); the
  code's p clamp at 1e-7 adds at most 9.21 (c - 1) 1e-7 to RCE and zeroes the gradient of any
  p_k < 1e-7, and the Keras CE is capped at -ln(1e-7) = 16.1; here log_softmax, no clamp.
  hitcszx/ALFs runs SCE with alpha = beta = 1 (lnl/config.py), not the SCE paper's 0.1 / 1.
- NCE+RCE, NCE+MAE. APL loss.py ``NormalizedCrossEntropy``: log_softmax, -log p_y / -sum_j
  log p_j, no clamp: the same as here. ``NCEandRCE(alpha, beta)`` = alpha NCE + beta RCE (RCE as
  in SCELoss, so A = -9.21 there); ``NCEandMAE`` = alpha NCE + beta ``MeanAbsoluteError``, which
  is the "reduced" 1 - p_y (scale 1; their comment notes the original 2 - 2 p_y): the registry
  uses 1 - p_y. configs/cifar10/{sym,asym}/nce+rce.yaml and nce+mae.yaml: alpha 1, beta 1.
  ALFs' ``MAELoss`` defaults to scale 2, so ALFs' NCEandMAE has twice APL's passive term.
- AGCE, AUL. hitcszx/ALFs@61245e9, lnl/losses.py ``AGCELoss``: ((a+1)^q - (a+p_y)^q) / q and
  ``AUELoss`` (the AUL): ((a-p_y)^q - (a-1)^q) / q (their q is the paper's and the registry's p);
  no clamp. lnl/config.py CIFAR10_CONFIG: AGCE a=0.6, q=0.6; AUL a=5.5, q=3 (the registry's
  defaults). Virusdoll/Active-Negative-Loss loss.py has the same two classes. Difference: the
  registry computes them with expm1/log1p (same values, less float32 cancellation).
- Bootstrapping. vfdev-5/BootstrappingLoss@a072e4a, bootstrapping_loss/loss.py
  ``SoftBootstrappingLoss(beta=0.95, as_pseudo_label=True)``: beta CE - (1 - beta) sum_k
  softmax(detached)_k log_softmax_k, i.e. the prediction in the target is detached;
  ``HardBootstrappingLoss(beta=0.8)``: z = argmax of the detached softmax, -(1 - beta) log p_z.
  The SCE repository's Keras ``boot_soft`` (beta 0.95) / ``boot_hard`` (beta 0.8) clip p to
  [1e-7, 1 - 1e-7] and do not stop the gradient through the soft target. The registry follows
  vfdev-5 (detached); the values agree, the soft gradients differ (tested below).
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from gce_core.loss_zoo import estimate_transition, estimation_epochs, forward_values
from gce_core.losses import (
    LOSS_ALIASES,
    LOSS_FORMULAS,
    LOSS_NAMES,
    LOSSES,
    RunContext,
    acs_weights,
    canonical_loss_name,
    cce,
    check_k,
    check_q,
    criterion,
    get_loss,
    loss_values,
    lq,
    lq_constant,
    mae,
    make_loss_state,
    truncated_lq,
    values_of_log_prob,
)
from gce_core.noise import expected_transition
from gce_core.spec import SpecError, load_stored_spec, parse_spec


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=g) * 3
    targets = torch.randint(0, 10, (64,), generator=g)
    return logits, targets


def f_y64(logits, targets):
    return torch.softmax(logits.double(), 1).gather(1, targets[:, None]).squeeze(1)


def test_cce_matches_float64_reference(batch):
    logits, targets = batch
    ref = -f_y64(logits, targets).log()
    assert torch.allclose(cce(logits, targets, "none").double(), ref, atol=1e-5)
    assert cce(logits, targets).item() == pytest.approx(ref.mean().item(), abs=1e-5)


def test_mae_is_paper_scale_l1_distance(batch):
    logits, targets = batch
    p = torch.softmax(logits.double(), 1)
    onehot = torch.nn.functional.one_hot(targets, 10).double()
    l1 = (onehot - p).abs().sum(1)
    assert torch.allclose(mae(logits, targets, "none").double(), l1, atol=1e-5)
    assert torch.allclose(l1, 2 - 2 * f_y64(logits, targets))


@pytest.mark.parametrize("q", [0.1, 0.3, 0.7, 1.0])
def test_lq_matches_float64_reference(batch, q):
    logits, targets = batch
    ref = (1 - f_y64(logits, targets) ** q) / q
    assert torch.allclose(lq(logits, targets, q, "none").double(), ref, atol=1e-5)


def test_lq_tends_to_cce_as_q_goes_to_zero():
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(256, 10, generator=g), torch.randint(0, 10, (256,), generator=g)
    diff = (lq(logits, targets, 1e-6, "none") - cce(logits, targets, "none")).abs().max()
    assert diff.item() < 1e-4


def test_lq_is_exact_at_tiny_q_even_for_large_losses(batch):
    # Lq - CCE = q log^2(p) / 2 + ... is real, but the float32 value must match float64 Lq.
    logits, targets = batch
    p = f_y64(logits, targets)
    ref = -torch.expm1(1e-6 * p.log()) / 1e-6
    assert torch.allclose(lq(logits, targets, 1e-6, "none").double(), ref, rtol=1e-5)


def test_lq_small_q_is_exact_where_naive_formula_fails():
    # p = 0.9: the naive (1 - p**q)/q in float32 gives 0.1192 at q = 1e-6; the truth is 0.10536.
    logits = torch.tensor([[math.log(0.9), math.log(0.1)]])
    value = lq(logits, torch.tensor([0]), 1e-6).item()
    assert value == pytest.approx(-math.log(0.9), abs=1e-5)


def test_lq_at_q_one_is_one_minus_fy(batch):
    logits, targets = batch
    ref = 1 - f_y64(logits, targets)
    assert torch.allclose(lq(logits, targets, 1.0, "none").double(), ref, atol=1e-6)


@pytest.mark.parametrize("name", ["cce", "mae", "lq", "truncated_lq"])
def test_finite_values_and_gradients_at_extreme_logits(name):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [0.0, 0.0, -1e4]], requires_grad=True)
    targets = torch.tensor([1, 0, 2])  # f_y underflows to 0 for every sample
    value = loss_values(logits, targets, name, q=0.7, k=0.5)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()


def test_lq_gradient_is_fy_power_q_times_cce_gradient(batch):
    logits, targets = batch
    q = 0.7
    a = logits.clone().requires_grad_(True)
    lq(a, targets, q, "sum").backward()
    b = logits.clone().requires_grad_(True)
    cce(b, targets, "none").mul(f_y64(logits, targets).float() ** q).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_reductions_agree(batch):
    logits, targets = batch
    none = lq(logits, targets, 0.7, "none")
    assert none.shape == (64,)
    assert lq(logits, targets, 0.7, "sum").item() == pytest.approx(none.sum().item(), rel=1e-5)
    assert lq(logits, targets, 0.7, "mean").item() == pytest.approx(none.mean().item(), rel=1e-5)


def test_truncated_lq_is_constant_below_k():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])  # f_0 = 0.88 and 0.12
    values = truncated_lq(logits, torch.tensor([0, 0]), 0.7, 0.5, reduction="none")
    assert values[1].item() == pytest.approx(lq_constant(0.5, 0.7))
    assert values[0].item() == pytest.approx((1 - 0.8808**0.7) / 0.7, abs=1e-4)


def test_acs_weights_and_weighted_objective(batch):
    logits, targets = batch
    k, q = 0.5, 0.7
    w = acs_weights(logits, targets, k)
    assert torch.equal(w.bool(), f_y64(logits, targets) > k)
    objective = truncated_lq(logits, targets, q, k, weights=w, reduction="none")
    truncated = truncated_lq(logits, targets, q, k, reduction="none")
    assert torch.allclose(objective, truncated - lq_constant(k, q), atol=1e-6)
    assert (objective <= 1e-7).all()  # the ACS objective is never positive: expected, not a bug


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5, float("nan")])
def test_bad_q_names_parameter_and_range(batch, q):
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        lq(*batch, q)


@pytest.mark.parametrize("k", [0.0, 1.0, 2.0])
def test_bad_k_names_parameter_and_range(batch, k):
    with pytest.raises(ValueError, match=r"k must be in \(0, 1\)"):
        truncated_lq(*batch, 0.7, k)


def test_bad_reduction_and_names(batch):
    with pytest.raises(ValueError, match="reduction must be one of"):
        mae(*batch, reduction="avg")
    with pytest.raises(ValueError, match="reduction must be one of"):
        cce(*batch, reduction="avg")
    assert canonical_loss_name("GCE") == "lq"
    with pytest.raises(ValueError, match="allowed: cce, mae, lq, truncated_lq"):
        canonical_loss_name("focal")


def test_bf16_logits_are_computed_in_float32(batch):
    logits, targets = batch
    a = lq(logits.bfloat16(), targets, 0.7)
    assert a.dtype == torch.float32
    assert a.item() == pytest.approx(lq(logits.bfloat16().float(), targets, 0.7).item(), abs=1e-6)


def reference64(name, logits, targets, q=0.3, k=0.4):
    """Per-sample values in float64 from the paper's formulas on softmax probabilities; for
    truncated_lq the ACS term Lq(f_y) - Lq(k) that ``criterion`` returns."""
    p = torch.softmax(logits, 1).gather(1, targets[:, None]).squeeze(1)
    if name == "cce":
        return -p.log()
    if name == "mae":
        return 2 - 2 * p
    lq64 = (1 - p**q) / q
    return lq64 - (1 - k**q) / q if name == "truncated_lq" else lq64


@pytest.mark.parametrize("name", ["cce", "mae", "lq", "truncated_lq"])
def test_criterion_values_and_gradients_match_float64(batch, name):
    logits, targets = batch
    fn = criterion(name, q=0.3, k=0.4)
    got_leaf = logits.clone().requires_grad_(True)
    values = fn(got_leaf, targets)
    assert values.shape == (64,) and values.dtype == torch.float32
    values.mean().backward()
    ref_leaf = logits.double().requires_grad_(True)
    ref = reference64(name, ref_leaf, targets)
    ref.mean().backward()
    torch.testing.assert_close(values.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_leaf.grad.double(), ref_leaf.grad, rtol=1e-4, atol=1e-7)


def test_criterion_weighted_is_the_acs_objective_and_pruned_samples_get_no_gradient(batch):
    logits, targets = batch
    w = acs_weights(logits, targets, 0.4)
    leaf = logits.clone().requires_grad_(True)
    objective = criterion("truncated_lq", q=0.3, k=0.4)(leaf, targets) * w
    want = truncated_lq(logits, targets, 0.3, 0.4, weights=w, reduction="none")
    torch.testing.assert_close(objective.detach(), want)
    objective.mean().backward()
    pruned = w == 0
    assert pruned.any() and (~pruned).any()
    assert torch.equal(leaf.grad[pruned], torch.zeros_like(leaf.grad[pruned]))
    assert (leaf.grad[~pruned].abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", ["cce", "mae", "lq", "truncated_lq"])
def test_criterion_agrees_with_the_named_loss_functions(batch, name):
    logits, targets = batch
    values = criterion(name, q=0.7, k=0.5)(logits, targets)
    want = loss_values(logits, targets, name, q=0.7, k=0.5, weights=torch.ones(64), reduction="none")
    torch.testing.assert_close(values, want)


def test_criterion_checks_its_name_and_parameters_once_when_made(batch):
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        criterion("lq", q=1.5)
    with pytest.raises(ValueError, match=r"k must be in \(0, 1\)"):
        criterion("truncated_lq", k=1.0)
    with pytest.raises(ValueError, match="allowed: cce, mae, lq, truncated_lq"):
        criterion("focal")
    criterion("cce", q=-1.0)  # cce has no q: not checked
    assert criterion("GCE", q=0.7)(*batch).shape == (64,)  # aliases as everywhere


def test_criterion_computes_half_precision_logits_in_float32(batch):
    logits, targets = batch
    got = criterion("lq")(logits.bfloat16(), targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, criterion("lq")(logits.bfloat16().float(), targets))


def test_values_of_log_prob_are_the_loss_of_every_label():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    log_p = torch.log_softmax(logits, 1)
    for name in ("cce", "mae", "lq", "truncated_lq"):
        table = values_of_log_prob(log_p, name, q=0.7, k=0.5)
        for j in range(4):
            want = loss_values(logits, torch.full((5,), j), name, q=0.7, k=0.5, reduction="none")
            torch.testing.assert_close(table[:, j], want)


# --- the registry: parameters, names, aliases -------------------------------------------------
ZOO = ("sce", "nce_rce", "nce_mae", "agce", "aul", "bootstrap_soft", "bootstrap_hard", "forward", "forward_est")
# The losses computed from logits and targets alone (forward correction needs its run's T).
OF_LOGITS = [name for name, loss in LOSSES.items() if not loss.needs_run]


def test_every_loss_is_selectable_and_every_name_list_comes_from_the_registry():
    assert ("cce", "mae", "lq", "truncated_lq", *ZOO) == LOSS_NAMES
    assert tuple(LOSSES) == LOSS_NAMES
    assert set(LOSS_FORMULAS) == set(LOSSES)
    assert LOSS_ALIASES == {"ce": "cce", "gce": "lq"}
    assert [n for n, loss in LOSSES.items() if loss.make_state] == ["truncated_lq", "forward", "forward_est"]
    assert [canonical_loss_name(n) for n in ZOO] == list(ZOO)
    with pytest.raises(ValueError, match="unknown loss 'focal'; allowed: cce, mae"):
        canonical_loss_name("focal")


def test_get_loss_takes_aliases_and_lists_every_name_when_unknown():
    assert get_loss(" GCE ") is LOSSES["lq"]
    assert get_loss("ce") is LOSSES["cce"]
    assert get_loss("nce_rce").name == "nce_rce"
    with pytest.raises(ValueError) as err:
        get_loss("focal")
    message = str(err.value)
    assert "\n" not in message and message.startswith("unknown loss 'focal'; allowed: ")
    assert message.split("allowed: ")[1].split(", ") == [*LOSSES, *LOSS_ALIASES]


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_is_described_and_its_defaults_pass_its_own_check(name, batch):
    loss = LOSSES[name]
    assert loss.label and loss.formula and loss.citation
    assert all(p.help for p in loss.params)
    assert loss.check_params() == loss.defaults
    assert loss.check_params(**loss.defaults) == loss.defaults
    if loss.needs_run:
        with pytest.raises(ValueError, match=rf"^{name} needs its run's transition matrix.*: it is computed per run"):
            criterion(name)
        return
    values = criterion(name)(*batch)
    assert values.shape == (64,) and values.dtype == torch.float32 and torch.isfinite(values).all()


def wrong_side_values(p):
    """Values just outside the range of Param ``p`` on each finite side, its open ends, NaN."""
    bad = [float("nan")]
    for end, is_open, step in ((p.low, p.low_open, -1.0), (p.high, p.high_open, 1.0)):
        if math.isfinite(end):
            bad += [end + step, end + step * 1e-9] + ([end] if is_open else [])
    return bad


PARAMS = [(name, p) for name, loss in LOSSES.items() for p in loss.params]


@pytest.mark.parametrize("name,param", PARAMS, ids=[f"{n}-{p.name}" for n, p in PARAMS])
def test_every_param_range_refuses_the_wrong_side_in_one_line(name, param):
    loss = LOSSES[name]
    assert param.contains(param.default)
    for ok in (param.low, param.high):
        if math.isfinite(ok) and not (param.low_open if ok == param.low else param.high_open):
            assert loss.check_params(**{param.name: ok})[param.name] == ok  # a closed end is allowed
    for value in wrong_side_values(param):
        with pytest.raises(ValueError) as err:
            loss.check_params(**{param.name: value})
        assert str(err.value) == f"{param.name} must be in {param.range_text}, got {value}"


def test_bad_values_name_the_parameter_its_range_and_the_value():
    with pytest.raises(ValueError, match=r"^q must be in \(0, 1\], got 1\.5$"):
        LOSSES["lq"].check_params(q=1.5)
    with pytest.raises(ValueError, match=r"^a must be in \(1, inf\), got 0\.5$"):
        LOSSES["aul"].check_params(a=0.5)
    with pytest.raises(ValueError, match=r"^A must be in \(-inf, 0\), got 4\.0$"):
        criterion("sce", A=4)
    with pytest.raises(ValueError, match=r"^beta must be in \[0, 1\], got 1\.2$"):
        criterion("bootstrap_soft", beta=1.2)
    with pytest.raises(ValueError, match=r"^q must be a number in \(0, inf\), got 'high'$"):
        LOSSES["agce"].check_params(q="high")
    with pytest.raises(ValueError, match=r"^sce takes alpha, beta, A; got unknown parameter 'q'$"):
        LOSSES["sce"].check_params(q=0.7)
    with pytest.raises(ValueError, match=r"^cce takes no parameters; got unknown parameter 'q'$"):
        LOSSES["cce"].check_params(q=0.7)


def test_check_q_and_check_k_are_the_registry_params():
    assert check_q(1) == 1.0 and check_k("0.25") == 0.25
    assert LOSSES["lq"].params[0].range_text == "(0, 1]"
    assert LOSSES["truncated_lq"].params[1].range_text == "(0, 1)"


def test_criterion_ignores_another_losses_params_but_not_a_typo(batch):
    torch.testing.assert_close(criterion("sce", q=0.3, k=0.9)(*batch), criterion("sce")(*batch))
    with pytest.raises(ValueError, match="sce takes alpha, beta, A; got unknown parameter 'alpah'"):
        criterion("sce", alpah=1.0)


# --- the zoo against float64 references of the papers' formulas --------------------------------
def paper64(name, logits, targets, **params):
    """Per-sample values in float64 from the papers' formulas on softmax probabilities p."""
    P = get_loss(name).check_params(**params)
    p = torch.softmax(logits, 1)
    onehot = F.one_hot(targets, logits.shape[1]).double()
    p_y = (p * onehot).sum(1)
    nce = -p_y.log() / -p.log().sum(1)
    if name in ("sce", "nce_rce"):
        log_label = torch.where(onehot == 1, 0.0, P["A"])  # log of the one-hot label, log 0 := A
        rce = -(p * log_label).sum(1)
        active = -p_y.log() if name == "sce" else nce
        return P["alpha"] * active + P["beta"] * rce
    if name == "nce_mae":
        return P["alpha"] * nce + P["beta"] * (1 - p_y)
    if name == "agce":
        a, q = P["a"], P["q"]
        return ((a + 1) ** q - (a + p_y) ** q) / q
    if name == "aul":
        a, e = P["a"], P["p"]
        return ((a - p_y) ** e - (a - 1) ** e) / e
    beta = P["beta"]  # bootstrapping: CE against a target made of the label and the model's guess
    guess = p.detach() if name == "bootstrap_soft" else F.one_hot(p.argmax(1), logits.shape[1]).double()
    return -((beta * onehot + (1 - beta) * guess) * p.log()).sum(1)


ZOO_CASES = [
    ("sce", {}), ("sce", {"alpha": 6.0, "beta": 0.1, "A": math.log(1e-4)}),
    ("nce_rce", {}), ("nce_rce", {"alpha": 10.0, "beta": 0.1}),
    ("nce_mae", {}), ("nce_mae", {"alpha": 10.0, "beta": 1.0}),
    ("agce", {}), ("agce", {"a": 6.0, "q": 1.5}), ("agce", {"a": 4.0, "q": 0.2}),
    ("aul", {}), ("aul", {"a": 6.3, "p": 1.5}), ("aul", {"a": 3.0, "p": 0.1}),
    ("bootstrap_soft", {}), ("bootstrap_soft", {"beta": 0.5}),
    ("bootstrap_hard", {}), ("bootstrap_hard", {"beta": 0.5}),
]


@pytest.mark.parametrize("name,params", ZOO_CASES, ids=[f"{n}-{p}" for n, p in ZOO_CASES])
def test_zoo_values_and_gradients_match_the_papers_formulas_in_float64(batch, name, params):
    """Defaults are the papers' CIFAR-10 settings (SCE 0.1/1, APL 1/1, ALFs AGCE a=q=0.6 and AUL
    a=5.5, p=3, Reed 0.95/0.8); the others are settings the reference code uses elsewhere."""
    logits, targets = batch
    leaf = logits.clone().requires_grad_(True)
    values = criterion(name, **params)(leaf, targets)
    assert values.shape == (64,) and values.dtype == torch.float32
    values.mean().backward()
    ref_leaf = logits.double().requires_grad_(True)
    ref = paper64(name, ref_leaf, targets, **params)
    ref.mean().backward()
    torch.testing.assert_close(values.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(leaf.grad.double(), ref_leaf.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", OF_LOGITS)
def test_every_loss_is_finite_with_finite_gradients_at_extreme_logits(name):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [0.0, 0.0, -1e4], [1e4, 0.0, 0.0]],
                          requires_grad=True)
    targets = torch.tensor([1, 0, 2, 0])  # f_y underflows to 0 for three samples, is 1 for the last
    values = criterion(name)(logits, targets)
    values.sum().backward()
    assert torch.isfinite(values).all()
    assert torch.isfinite(logits.grad).all()
    if name != "truncated_lq":  # its ACS term Lq - Lq(k) is negative for kept samples, by design
        assert (values >= 0).all()
    assert values[3].abs().item() < 1e-6 or name == "truncated_lq"  # f_y = 1: no loss


def test_sce_with_beta_zero_is_alpha_times_cce_and_with_alpha_zero_is_rce(batch):
    logits, targets = batch
    torch.testing.assert_close(criterion("sce", alpha=0.3, beta=0.0)(*batch), 0.3 * cce(*batch, "none"))
    rce = criterion("sce", alpha=0.0, beta=1.0, A=-4.0)(*batch).double()
    torch.testing.assert_close(rce, 4 * (1 - f_y64(logits, targets)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scale", [0.01, 3.0, 30.0, 1e4])
def test_nce_is_in_zero_one_and_one_over_c_at_the_uniform_output(scale):
    g = torch.Generator().manual_seed(3)
    logits, targets = torch.randn(512, 10, generator=g) * scale, torch.randint(0, 10, (512,), generator=g)
    nce = criterion("nce_rce", alpha=1.0, beta=0.0)(logits, targets)
    assert nce.min().item() >= 0.0 and nce.max().item() <= 1.0
    torch.testing.assert_close(criterion("nce_mae", beta=0.0)(logits, targets), nce)
    uniform = criterion("nce_rce", beta=0.0)(torch.zeros(3, 10), torch.tensor([0, 4, 9]))
    torch.testing.assert_close(uniform, torch.full((3,), 0.1))


def test_agce_and_aul_are_one_minus_fy_at_exponent_one(batch):
    logits, targets = batch
    want = 1 - f_y64(logits, targets)
    for name, params in (("agce", {"a": 2.0, "q": 1.0}), ("aul", {"a": 2.0, "p": 1.0})):
        torch.testing.assert_close(criterion(name, **params)(*batch).double(), want, rtol=1e-5, atol=1e-6)


def test_agce_and_aul_lose_less_to_float32_than_their_naive_forms_as_fy_goes_to_one():
    d = torch.linspace(4.6, 6.9, 400)  # 1 - f_y from 1e-2 down to 1e-3, two classes
    logits, targets = torch.stack([d, torch.zeros_like(d)], 1), torch.zeros(400, dtype=torch.long)
    f64, f32 = torch.softmax(logits.double(), 1)[:, 0], torch.softmax(logits, 1)[:, 0]
    for name, P in (("agce", {"a": 0.6, "q": 0.6}), ("aul", {"a": 5.5, "p": 3.0})):
        if name == "agce":
            form = lambda f, a=P["a"], q=P["q"]: ((a + 1) ** q - (a + f) ** q) / q  # noqa: E731
        else:
            form = lambda f, a=P["a"], e=P["p"]: ((a - f) ** e - (a - 1) ** e) / e  # noqa: E731
        ref = form(f64)
        got = criterion(name, **P)(logits, targets).double()
        assert ((got - ref).abs() / ref).max().item() < 1.5e-4
        assert ((form(f32).double() - ref).abs() / ref).max().item() > 1.5e-4  # the naive form


def test_bootstrapping_detaches_the_models_own_prediction(batch):
    logits, targets = batch
    leaf = logits.clone().requires_grad_(True)
    criterion("bootstrap_soft")(leaf, targets).sum().backward()
    target = 0.95 * F.one_hot(targets, 10) + 0.05 * torch.softmax(logits, 1)  # a constant
    fixed = logits.clone().requires_grad_(True)
    F.cross_entropy(fixed, target, reduction="sum").backward()
    torch.testing.assert_close(leaf.grad, fixed.grad)
    through = logits.double().requires_grad_(True)  # Reed's entropy reading, the Keras boot_soft
    p = torch.softmax(through, 1)
    (-((0.95 * F.one_hot(targets, 10) + 0.05 * p) * p.log()).sum()).backward()
    assert not torch.allclose(leaf.grad.double(), through.grad, atol=1e-4)


def test_hard_bootstrapping_is_ce_when_the_label_is_the_prediction_or_beta_is_one(batch):
    logits, _ = batch
    argmax = logits.argmax(1)
    torch.testing.assert_close(criterion("bootstrap_hard")(logits, argmax), cce(logits, argmax, "none"))
    targets = (argmax + 1) % 10
    torch.testing.assert_close(criterion("bootstrap_hard", beta=1.0)(logits, targets), cce(logits, targets, "none"))


# --- f_y forms and gradient weights --------------------------------------------------------------
FY_CASES = [(n, {}) for n, loss in LOSSES.items() if loss.of_fy is not None] + [
    ("lq", {"q": 0.3}), ("truncated_lq", {"q": 0.3, "k": 0.4}),
    ("sce", {"alpha": 6.0, "beta": 0.1, "A": -9.0}), ("agce", {"a": 6.0, "q": 1.5}), ("aul", {"a": 3.0, "p": 0.1}),
]


def test_the_f_y_forms_are_given_exactly_for_the_losses_of_f_y_alone():
    alone = {"cce", "mae", "lq", "truncated_lq", "sce", "agce", "aul"}
    assert {n for n, loss in LOSSES.items() if loss.of_fy is not None} == alone
    assert {n for n, loss in LOSSES.items() if loss.grad_weight is not None} == alone


@pytest.mark.parametrize("name,params", FY_CASES, ids=[f"{n}-{p}" for n, p in FY_CASES])
def test_of_fy_agrees_with_the_per_sample_values(batch, name, params):
    logits, targets = batch
    loss = LOSSES[name]
    P = loss.check_params(**params)
    values = criterion(name, **params)(logits.double(), targets)
    if name == "truncated_lq":  # the truncated loss = ACS term * w + Lq(k)
        values = values * acs_weights(logits, targets, P["k"]).double() + lq_constant(P["k"], P["q"])
    torch.testing.assert_close(loss.of_fy(f_y64(logits, targets), **P), values, rtol=1e-9, atol=1e-12)
    assert loss.of_fy(0.5, **P).dtype == torch.float64  # a float works too (the Theory page's grid)


@pytest.mark.parametrize("name,params", FY_CASES, ids=[f"{n}-{p}" for n, p in FY_CASES])
def test_grad_weight_times_the_cce_gradient_is_the_autograd_gradient(batch, name, params):
    logits, targets = batch
    loss = LOSSES[name]
    P = loss.check_params(**params)
    leaf = logits.double().requires_grad_(True)
    values = criterion(name, **params)(leaf, targets)
    if name == "truncated_lq":
        values = values * acs_weights(logits, targets, P["k"]).double()
    values.sum().backward()
    ce_leaf = logits.double().requires_grad_(True)
    F.cross_entropy(ce_leaf, targets, reduction="none").sum().backward()
    weight = loss.grad_weight(f_y64(logits, targets), **P)
    torch.testing.assert_close(leaf.grad, weight[:, None] * ce_leaf.grad, rtol=1e-9, atol=1e-12)


# --- loss sums over all labels ---------------------------------------------------------------
def dirichlet_logits(n, c, seed, concentration=0.3):
    g = torch.Generator().manual_seed(seed)
    gamma = torch._standard_gamma(torch.full((n, c), concentration, dtype=torch.float64), generator=g)
    return (gamma / gamma.sum(1, keepdim=True)).clamp_min(1e-30).log()


def label_sums(name, logits, **params):
    """Per sample, the loss summed over every label j (float64 logits (N, c) -> (N,)); truncated
    Lq in its truncated form (``of_fy``), not the ACS term that ``criterion`` returns."""
    loss, labels = LOSSES[name], range(logits.shape[1])
    if name == "truncated_lq":
        f, P = torch.softmax(logits, 1), loss.check_params(**params)
        return sum(loss.of_fy(f[:, j], **P) for j in labels)
    fn = criterion(name, **params)
    return sum(fn(logits, torch.full((len(logits),), j)) for j in labels)


SYMMETRIC = [
    ("mae", {}), ("sce", {"alpha": 0.0}), ("sce", {"alpha": 0.0, "beta": 2.0, "A": math.log(1e-4)}),
    ("nce_rce", {"beta": 0.0}), ("nce_rce", {}), ("nce_rce", {"alpha": 10.0, "beta": 0.1}),
    ("nce_mae", {}), ("agce", {"a": 0.6, "q": 1.0}), ("aul", {"a": 5.5, "p": 1.0}),
]


@pytest.mark.parametrize("c", [2, 10, 100])
@pytest.mark.parametrize("name,params", SYMMETRIC, ids=[f"{n}-{p}" for n, p in SYMMETRIC])
def test_symmetric_losses_sum_to_their_constant_over_all_labels(c, name, params):
    """MAE, RCE (SCE at alpha 0), NCE (NCE+RCE at beta 0) and the APL pairs are symmetric; AGCE
    and AUL only at exponent 1, where they are 1 - f_y."""
    lo, hi = LOSSES[name].sum_band(c, **params)
    assert lo == pytest.approx(hi, rel=1e-12)
    sums = label_sums(name, dirichlet_logits(2000, c, seed=c), **params)
    torch.testing.assert_close(sums, torch.full_like(sums, lo), rtol=1e-9, atol=1e-9)


BANDED = [
    ("agce", {}), ("agce", {"a": 6.0, "q": 1.5}), ("agce", {"a": 4.0, "q": 0.2}),
    ("aul", {}), ("aul", {"a": 6.3, "p": 1.5}), ("aul", {"a": 3.0, "p": 0.1}),
    ("sce", {}), ("lq", {"q": 0.3}), ("cce", {}),
]  # truncated Lq's band: tests/test_bounds.py (at c = 100 these outputs are all below k)


@pytest.mark.parametrize("c", [10, 100])
@pytest.mark.parametrize("name,params", BANDED, ids=[f"{n}-{p}" for n, p in BANDED])
def test_asymmetric_losses_sum_inside_their_band_which_is_not_a_point(c, name, params):
    """AGCE and AUL (Zhou et al. call them asymmetric, a weaker property than symmetric) are not
    symmetric at the ALFs settings: the sum over labels moves with the output, inside a band whose
    ends are the uniform and a one-hot output (checked for the zoo; the paper's for the rest)."""
    lo, hi = LOSSES[name].sum_band(c, **params)
    assert lo < hi
    sums = label_sums(name, dirichlet_logits(2000, c, seed=7), **params)
    assert sums.min().item() >= lo - 1e-9 * c and sums.max().item() <= hi + 1e-9 * c
    assert sums.max().item() - sums.min().item() > 1e-3 * min(hi - lo, 1.0)
    if name in ("agce", "aul", "sce"):
        uniform = label_sums(name, torch.zeros(1, c, dtype=torch.float64), **params).item()
        one_hot = torch.full((1, c), -1e4, dtype=torch.float64)
        one_hot[0, 0] = 0.0
        ends = (uniform, label_sums(name, one_hot, **params).item())
        assert min(ends) == pytest.approx(lo, rel=1e-9)
        assert max(ends) == pytest.approx(hi, rel=1e-9) or (name == "sce" and math.isinf(hi))


def test_bootstrapping_has_no_band_and_bands_check_their_params():
    assert LOSSES["bootstrap_soft"].sum_band(10) is None and LOSSES["bootstrap_hard"].sum_band(10) is None
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\], got 2"):
        LOSSES["lq"].sum_band(10, q=2)


# --- forward correction (Patrini et al. 2017) -----------------------------------------------------
T3 = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.0, 0.5, 0.5]], dtype=torch.float64)


def forward64(logits, targets, transition):
    """-log (f T)_y in float64 on softmax probabilities, as Patrini et al.'s loss.py writes it
    (``-sum(y_true * log(dot(y_pred, P)))``, without its epsilon clip)."""
    p = torch.softmax(logits.double(), 1)
    return -(p @ transition.double()).gather(1, targets[:, None]).squeeze(1).log()


def test_forward_with_the_identity_is_cce(batch):
    logits, targets = batch
    got = forward_values(logits.double(), targets, torch.eye(10, dtype=torch.float64))
    torch.testing.assert_close(got, F.cross_entropy(logits.double(), targets, reduction="none"), rtol=1e-12, atol=1e-12)


def test_forward_on_a_hand_computed_case():
    logits = torch.tensor([[0.5, 0.3, 0.2]] * 3).log()  # f = (0.5, 0.3, 0.2)
    got = forward_values(logits, torch.tensor([0, 1, 2]), T3)
    # (f T) = (0.5*0.8 + 0.3*0.2 + 0, 0.5*0.1 + 0.3*0.7 + 0.2*0.5, 0.5*0.1 + 0.3*0.1 + 0.2*0.5)
    want = -torch.tensor([0.46, 0.36, 0.18]).log()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_forward_values_and_gradients_match_float64(batch):
    logits, targets = batch
    g = torch.Generator().manual_seed(3)
    t = torch.rand(10, 10, generator=g, dtype=torch.float64) + 4 * torch.eye(10, dtype=torch.float64)
    t = t / t.sum(1, keepdim=True)
    leaf = logits.clone().requires_grad_(True)
    values = forward_values(leaf, targets, t.float())
    assert values.dtype == torch.float32
    values.mean().backward()
    ref_leaf = logits.double().requires_grad_(True)
    ref = forward64(ref_leaf, targets, t)
    ref.mean().backward()
    torch.testing.assert_close(values.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(leaf.grad.double(), ref_leaf.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("transition,first", [
    (T3, -math.log(0.1)), (torch.eye(3, dtype=torch.float64), 2e4), (torch.full((3, 3), 1 / 3), math.log(3)),
])  # fmt: skip
def test_forward_is_finite_with_finite_gradients_at_extreme_logits(transition, first):
    """Zero entries of T (T3's row 2, the identity) are -inf terms of the logsumexp, with no
    gradient; the naive log of a product underflows to -inf and NaN instead."""
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [0.0, 0.0, -1e4], [1e4, 0.0, 0.0]],
                          requires_grad=True)
    targets = torch.tensor([1, 0, 2, 0])
    values = forward_values(logits, targets, transition)
    values.sum().backward()
    assert torch.isfinite(values).all() and torch.isfinite(logits.grad).all()
    assert (values >= -1e-6).all()
    # sample 0: f = (1, e^-2e4, e^-1e4), so (f T)_1 = T[0, 1], or f_1 = e^-2e4 where T[0, 1] = 0
    assert values[0].item() == pytest.approx(first, rel=1e-5)


def synthetic_noisy_posteriors(transition, per_class=300, seed=0):
    """Softmax outputs of a perfect CCE network on noisy labels: each image's clean posterior is
    near one class (a mix of e_i and up to 30% of a random output, most of them under 1%), its noisy posterior that times
    T. The anchors (tiny mix) of class i have p(noisy i | x) close to T's row i."""
    g = torch.Generator().manual_seed(seed)
    c = transition.shape[0]
    clean = []
    for i in range(c):
        mix = torch.rand(per_class, 1, generator=g, dtype=torch.float64) ** 4 * 0.3  # most near 0
        other = torch.softmax(torch.randn(per_class, c, generator=g, dtype=torch.float64), 1)
        clean.append((1 - mix) * F.one_hot(torch.tensor(i), c).double() + mix * other)
    return torch.cat(clean) @ transition


@pytest.mark.parametrize("transition", [
    T3,
    torch.eye(10, dtype=torch.float64) * 0.6 + 0.4 / 10,  # uniform_any 0.4
    expected_transition("class_dependent", 0.4, 10, "cifar10"),
])  # fmt: skip
def test_the_estimator_recovers_a_known_transition_matrix(transition):
    probs = synthetic_noisy_posteriors(transition)
    estimate = estimate_transition(probs)
    assert estimate.shape == transition.shape and estimate.dtype == torch.float64
    torch.testing.assert_close(estimate.sum(1), torch.ones(len(transition), dtype=torch.float64))
    assert (estimate - transition).abs().max().item() < 0.03
    # the row below the 97th percentile, not the top one: the top 3% of p(i | x) are skipped
    assert not torch.equal(estimate_transition(probs, percentile=100.0), estimate)


def test_the_estimator_takes_the_row_just_below_the_97th_percentile():
    spread = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)[:, None]
    probs = torch.cat([spread, 1 - spread], 1)
    est = estimate_transition(probs)  # column 0: 0, 0.01, ..., 1; 97th percentile 0.97 -> row 0.96
    # (np.percentile(column, 97, interpolation="higher") is 0.97; entries >= 0.97 are skipped)
    torch.testing.assert_close(est[0], torch.tensor([0.96, 0.04], dtype=torch.float64))
    torch.testing.assert_close(est[1], torch.tensor([0.04, 0.96], dtype=torch.float64))
    top = estimate_transition(probs, percentile=100.0)  # the plain argmax: the "perfect example"
    torch.testing.assert_close(top, torch.eye(2, dtype=torch.float64))


def test_forward_uses_the_noises_own_matrix_and_forward_est_its_estimate():
    spec = parse_spec(dict(loss="forward", noise="class_dependent", noise_rate=0.3, epochs=4))
    run = RunContext(spec, torch.zeros(5, 1, 8, 8), torch.zeros(5, dtype=torch.long),
                     torch.zeros(5, dtype=torch.bool), 10, lambda model: None)
    state = make_loss_state("forward", run)
    want = expected_transition("class_dependent", 0.3, 10, spec.class_map)
    torch.testing.assert_close(state.transition, want.float())
    assert state.sum_values is not None and state.state_dict() == {}
    est = make_loss_state("forward_est", run, est_share=0.5)
    assert est.est_epochs == 2 and est.transition is None
    assert estimation_epochs(10, 0.01) == 1 and estimation_epochs(10, 0.99) == 9


# --- the spec's loss parameters: per-loss defaults, old specs --------------------------------------
def test_q_is_the_losss_own_default_until_given():
    assert parse_spec(dict(loss="lq")).q == 0.7
    assert parse_spec(dict(loss="agce")).q == 0.6  # the ALFs default, not Lq's
    assert parse_spec(dict(loss="cce")).q is None and parse_spec(dict(loss="cce")).loss_params() == {}
    assert parse_spec(dict(loss="agce", q=1.5)).q == 1.5  # AGCE's range is q > 0
    assert parse_spec(dict(loss="forward_est")).est_share == 0.25
    with pytest.raises(SpecError, match=r"^q: q must be in \(0, 1\], got 1.5$"):
        parse_spec(dict(loss="lq", q=1.5))
    with pytest.raises(SpecError, match=r"^epochs: forward_est needs 2 epochs or more"):
        parse_spec(dict(loss="forward_est", epochs=1))


def test_switching_loss_keeps_a_parameter_only_where_it_means_the_same():
    lq_spec = parse_spec(dict(loss="lq", q=0.4))
    assert lq_spec.with_loss("truncated_lq").q == 0.4  # the same Param: the paper's grid over q
    assert lq_spec.with_loss("agce").q == 0.6  # AGCE's q is another parameter
    assert lq_spec.with_loss("agce", q=0.3).q == 0.3
    assert lq_spec.with_loss("cce").loss_params() == {}
    assert parse_spec(dict(loss="sce", beta=2.0)).with_loss("bootstrap_soft").beta == 0.95
    assert parse_spec(dict(loss="sce", A=-6.0)).with_loss("nce_rce").A == -6.0


def test_a_spec_stored_before_the_new_fields_loads():
    old = {"loss": "cce", "q": 0.7, "k": 0.5, "epochs": 3, "noise": "uniform", "noise_rate": 0.4}
    spec = load_stored_spec(json.dumps(old))  # no alpha, beta, A, a, p, est_share
    assert spec.loss == "cce" and spec.q is None and spec.est_share is None and spec.epochs == 3
    assert spec == load_stored_spec(parse_spec(dict(old, q=None)).to_json())
    agce = load_stored_spec(json.dumps(dict(old, loss="agce", a=0.6)))
    assert agce.q == 0.7 and agce.loss_params() == {"a": 0.6, "q": 0.7}  # what that run trained with
