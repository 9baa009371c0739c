"""The autograd-free step of Flatten/Linear/ReLU chains gives autograd's gradients bit for bit,
and the trainer's rows do not depend on which path ran."""

import torch

import gce_core.train as train_module
from gce_core.chain import Chain, layer_chain
from gce_core.models import init_seeded
from gce_core.spec import parse_spec
from gce_core.threads import intra_op_threads


def autograd_grads(model, x, dlogits):
    model.zero_grad(set_to_none=True)
    model(x).backward(dlogits)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_layer_chain_knows_the_mlp_and_refuses_the_cnn():
    assert [k for k, _ in layer_chain(init_seeded("mlp", (1, 8, 8), 10, 0))] == [
        "flatten", "linear", "relu", "linear", "relu", "linear"]  # fmt: skip
    assert layer_chain(init_seeded("cnn", (3, 8, 8), 10, 0)) is None


def test_chain_gradients_are_autograds_single_and_stacked():
    g = torch.Generator().manual_seed(0)
    models = [init_seeded("mlp", (1, 8, 8), 10, seed) for seed in range(3)]
    x = torch.randn(3, 37, 1, 8, 8, generator=g)
    dlogits = torch.randn(3, 37, 10, generator=g)
    steps = layer_chain(models[0])
    want = [autograd_grads(m, x[i], dlogits[i]) for i, m in enumerate(models)]

    one = Chain(steps, dict(models[0].named_parameters()))
    logits, tape = one.forward(x[0])
    assert torch.equal(logits, models[0](x[0]))
    grads = {n: torch.empty_like(p) for n, p in models[0].named_parameters()}
    one.backward(tape, dlogits[0], grads)
    assert all(torch.equal(grads[n], want[0][n]) for n in grads)

    stacked = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n in grads}
    many = Chain(steps, stacked)
    logits, tape = many.forward(x)
    grads = {n: torch.empty_like(p) for n, p in stacked.items()}
    many.backward(tape, dlogits, grads)
    for i in range(3):
        assert all(torch.allclose(grads[n][i], want[i][n], atol=1e-6) for n in grads)


def test_trainer_rows_do_not_depend_on_the_path(monkeypatch):
    # One thread: the chain's rows are the one-thread rows at any count (tests/test_threads.py);
    # autograd's are only at one thread.
    spec = parse_spec(dict(dataset="digits", model="mlp", train_subset=200, epochs=3, batch_size=32,
                           lr=0.1, loss="lq", noise="uniform", noise_rate=0.4, device="cpu"))  # fmt: skip
    fast, slow = [], []
    with intra_op_threads(1):
        train_module.train(spec, on_epoch=fast.append)
        monkeypatch.setattr(train_module, "layer_chain", lambda model: None)  # autograd path
        train_module.train(spec, on_epoch=slow.append)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(fast) == strip(slow)


def test_chain_forward_writes_the_logits_into_out_bitwise():
    g = torch.Generator().manual_seed(1)
    model = init_seeded("mlp", (1, 8, 8), 10, 0)
    chain = Chain(layer_chain(model), dict(model.named_parameters()))
    x = torch.randn(20, 1, 8, 8, generator=g)
    want, _ = chain.forward(x)
    buffer = torch.full((30, 10), float("nan"))
    got, tape = chain.forward(x, out=buffer[5:25])
    assert got.data_ptr() == buffer[5:25].data_ptr() and torch.equal(got, want)
    assert torch.isnan(buffer[:5]).all() and torch.isnan(buffer[25:]).all() and len(tape) == 5

    relu_last = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    chain = Chain(layer_chain(relu_last), dict(relu_last.named_parameters()))
    x, out = torch.randn(6, 4, generator=g), torch.empty(6, 3)
    got = chain.forward(x, keep=False, out=out)
    assert got is out and torch.equal(out, relu_last(x).detach())


def test_the_chain_builds_no_graph_even_with_grad_mode_on():
    model = init_seeded("mlp", (1, 8, 8), 10, 0)
    assert all(p.requires_grad for p in model.parameters())
    chain = Chain(layer_chain(model), dict(model.named_parameters()))
    with torch.enable_grad():
        logits, tape = chain.forward(torch.randn(5, 1, 8, 8))
        assert not logits.requires_grad and not any(t.requires_grad for t in tape)
        grads = {n: torch.empty_like(p) for n, p in model.named_parameters()}
        chain.backward(tape, torch.randn(5, 10), grads)
        assert not any(g.requires_grad for g in grads.values())
