"""FlatSGD: torch SGD's arithmetic on one flat buffer, bitwise, in torch's own state format."""

import pytest
import torch

from gce_core.models import init_seeded
from gce_core.optim import FlatSGD


def make(opt_cls=torch.optim.SGD, flavour="foreach", **kw):
    model = init_seeded("mlp", (1, 8, 8), 10, seed=0)
    opt = opt_cls(model.parameters(), lr=0.05, weight_decay=1e-3, **{flavour: True}, **kw)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3], gamma=0.1)
    return model, opt, sched


def random_grads(model, step):
    g = torch.Generator().manual_seed(step)
    return [torch.randn(p.shape, generator=g) for p in model.parameters()]


def run(model, opt, sched, stepper, steps, start=0):
    for step in range(start, start + steps):
        if stepper is None:
            opt.zero_grad(set_to_none=True)
        else:
            stepper.zero_grad()
        for p, g in zip(model.parameters(), random_grads(model, step), strict=True):
            if p.grad is None:
                p.grad = g
            else:
                p.grad.copy_(g)
        (stepper or opt).step()
        sched.step()


FLAVOURS = pytest.mark.parametrize("flavour", ["foreach", "fused"])  # fused: the lab's choice


@FLAVOURS
def test_flat_steps_are_bitwise_torch_sgd_with_momentum_and_schedule(flavour):
    ref_model, ref_opt, ref_sched = make(flavour=flavour, momentum=0.9)
    model, opt, sched = make(flavour=flavour, momentum=0.9)
    stepper = FlatSGD(opt)
    assert stepper.flat
    run(ref_model, ref_opt, ref_sched, None, 6)
    run(model, opt, sched, stepper, 6)
    for a, b in zip(ref_model.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"] == pytest.approx(0.005)
    ref_state, state = ref_opt.state_dict(), opt.state_dict()  # torch's format, same buffers
    assert ref_state["state"].keys() == state["state"].keys()
    for i, s in ref_state["state"].items():
        assert torch.equal(s["momentum_buffer"], state["state"][i]["momentum_buffer"])


@FLAVOURS
def test_resume_from_a_state_dict_continues_bitwise(flavour):
    ref_model, ref_opt, ref_sched = make(flavour=flavour, momentum=0.9)
    run(ref_model, ref_opt, ref_sched, None, 5)
    model, opt, sched = make(flavour=flavour, momentum=0.9)
    run(model, opt, sched, FlatSGD(opt), 2)
    saved = (model.state_dict(), opt.state_dict(), sched.state_dict())
    model2, opt2, sched2 = make(flavour=flavour, momentum=0.9)
    stepper2 = FlatSGD(opt2)
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    sched2.load_state_dict(saved[2])
    stepper2.resync()
    run(model2, opt2, sched2, stepper2, 3, start=2)
    for a, b in zip(ref_model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)


def test_adam_and_nesterov_fall_back_to_torch():
    _, adam, _ = make(torch.optim.Adam)
    assert not FlatSGD(adam).flat
    _, nesterov, _ = make(momentum=0.9, nesterov=True)
    assert not FlatSGD(nesterov).flat


@FLAVOURS
def test_flat_steps_without_momentum_are_bitwise_torch_sgd(flavour):
    ref_model, ref_opt, ref_sched = make(flavour=flavour)
    model, opt, sched = make(flavour=flavour)
    run(ref_model, ref_opt, ref_sched, None, 4)
    run(model, opt, sched, FlatSGD(opt), 4)
    assert all(torch.equal(a, b) for a, b in zip(ref_model.parameters(), model.parameters(), strict=True))
    assert opt.state_dict()["state"] == {} or all(
        s.get("momentum_buffer") is None for s in opt.state_dict()["state"].values()
    )


def test_the_lab_uses_fused_sgd_and_falls_back_to_foreach_where_there_is_none(monkeypatch):
    from gce_core.spec import parse_spec
    from gce_core.train import make_optimizer

    spec = parse_spec({"dataset": "digits", "loss": "cce"})
    model = init_seeded("mlp", (1, 8, 8), 10, seed=0)
    group = make_optimizer(spec, model.parameters()).param_groups[0]
    assert group["fused"] and not group["foreach"] and len(group["params"]) == 6

    real_sgd = torch.optim.SGD

    def no_fused_kernel(params, fused=None, **kw):
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be ... of supported devices")
        return real_sgd(params, **kw)

    monkeypatch.setattr(torch.optim, "SGD", no_fused_kernel)
    group = make_optimizer(spec, model.parameters()).param_groups[0]
    assert group["foreach"] and not group["fused"] and len(group["params"]) == 6


@FLAVOURS
def test_stacked_runs_step_bitwise_as_each_run_alone(flavour):
    """The fused trainer steps K runs' stacked parameters at once: each run's entries must get
    the arithmetic they get alone, also where a parameter's size leaves a scalar tail (the
    10-entry output bias)."""
    runs = [make(flavour=flavour, momentum=0.9) for _ in range(3)]
    names = [n for n, _ in runs[0][0].named_parameters()]
    stacked = {n: torch.stack([dict(m.named_parameters())[n].detach() for m, _, _ in runs]).requires_grad_()
               for n in names}
    opt = torch.optim.SGD(list(stacked.values()), lr=0.05, weight_decay=1e-3, momentum=0.9, **{flavour: True})
    stepper = FlatSGD(opt, runs=3)
    singles = [FlatSGD(o) for _, o, _ in runs]
    g = torch.Generator().manual_seed(7)
    for _ in range(4):
        grads = {n: torch.randn(p.shape, generator=g) * 10 for n, p in stacked.items()}
        stepper.zero_grad()
        for n, p in stacked.items():
            p.grad.copy_(grads[n])
        stepper.step()
        for k, ((model, _, _), single) in enumerate(zip(runs, singles, strict=True)):
            single.zero_grad()
            for n, p in model.named_parameters():
                p.grad.copy_(grads[n][k])
            single.step()
    for k, (model, _, _) in enumerate(runs):
        for n, p in model.named_parameters():
            assert torch.equal(stacked[n][k], p), n
