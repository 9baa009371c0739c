"""The lab's trainer against a plain per-batch loop, epoch by epoch, on the digits quick preset.

Lab: one complete epoch of gce_core.train (run_epochs: training pass, evaluation, the metrics
row). Plain: the loop a user writes by hand over the same device tensors (no DataLoader): a
permutation per epoch, index-slice batches, model, F.cross_entropy (CCE) or the lab's own
losses.lq (Lq), backward, torch.optim.SGD step, then validation and test accuracy. The four
contenders run in alternating order, one epoch each per round; the ratios are medians of
per-round ratios, so a slow spell of a shared machine hits both sides alike.

    python -m bench.bench_trainer [--rounds 150] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from bench.common import (
    REFERENCE_NOTE,
    Report,
    Table,
    device_facts,
    fmt_x,
    interleaved,
    paired_ratio,
    set_threads,
    sync,
)
from gce_core.experiment_data import ExperimentData, build_experiment_data
from gce_core.losses import lq
from gce_core.models import init_seeded
from gce_core.spec import RunSpec, from_preset
from gce_core.train import new_state, run_epochs, train_one_epoch

NOISE = dict(noise="uniform", noise_rate=0.4)
WARMUP = 2  # untimed epochs of each contender before the rounds


class PlainLoop:
    """``spec`` trained the plain way on ``data``'s tensors; ``epoch()`` runs one epoch."""

    def __init__(self, spec: RunSpec, data: ExperimentData, device: torch.device):
        self.spec, self.data = spec, data
        shape = tuple(data.x_train.shape[1:])
        self.model = init_seeded(spec.model, shape, data.num_classes, spec.seed).to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=spec.lr, momentum=spec.momentum,
                                   weight_decay=spec.weight_decay)  # fmt: skip
        self.generator = torch.Generator().manual_seed(spec.seed + 1)
        self.accuracies: list[tuple[float, float]] = []

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y) if self.spec.loss == "cce" else lq(logits, y, self.spec.q)

    def train_pass(self) -> None:
        model, data, bs = self.model, self.data, self.spec.batch_size
        perm = torch.randperm(data.n_train, generator=self.generator).to(data.x_train.device)
        model.train()
        for start in range(0, data.n_train, bs):
            idx = perm[start : start + bs]
            loss = self.loss(model(data.x_train[idx]), data.y_train[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

    def epoch(self) -> None:
        model, data = self.model, self.data
        self.train_pass()
        model.eval()
        with torch.no_grad():
            val = (model(data.x_val).argmax(1) == data.y_val).float().mean().item()
            test = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
        self.accuracies.append((val, test))


def contenders(losses: tuple[str, ...], data: ExperimentData, device: torch.device, epochs: int) -> dict:
    """name -> a function that runs one more epoch (and waits for the device): lab_<loss> and
    plain_<loss> for each loss (whole epochs), and labpass_<loss> and plainpass_<loss> (the
    training pass alone: the lab's train_one_epoch, which keeps each batch's logits and makes the
    training-set metrics from them, against the plain loop's batches)."""

    def synced(fn):
        def call():
            fn()
            sync(device)

        return call

    out = {}
    for loss in losses:
        spec = from_preset("quick", "digits", loss=loss, device=device.type, epochs=epochs, **NOISE)
        st = new_state(spec, data, device)
        out[f"lab_{loss}"] = synced(lambda spec=spec, st=st: run_epochs(spec, st, data, device, st.epoch + 1))
        out[f"plain_{loss}"] = synced(PlainLoop(spec, data, device).epoch)
        st_pass = new_state(spec, data, device)
        out[f"labpass_{loss}"] = synced(lambda spec=spec, st=st_pass: train_one_epoch(spec, st, data, device))
        out[f"plainpass_{loss}"] = synced(PlainLoop(spec, data, device).train_pass)
    return out


def run(rounds: int = 150, threads: int | None = None, device_name: str = "cpu", reference: bool = False) -> Report:
    set_threads(threads)
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine; use --device cpu")
    facts = device_facts(device)
    spec = from_preset("quick", "digits", device=device.type, **NOISE)
    data = build_experiment_data(spec, device)  # the same tensors for every contender
    times = interleaved(contenders(("cce", "lq"), data, device, rounds + WARMUP), rounds, warmup=WARMUP)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    lab_vs_plain = {loss: paired_ratio(times[f"lab_{loss}"], times[f"plain_{loss}"]) for loss in ("cce", "lq")}
    lq_vs_cce = {who: paired_ratio(times[f"{who}_lq"], times[f"{who}_cce"]) for who in ("lab", "plain")}
    pass_vs_plain = {loss: paired_ratio(times[f"labpass_{loss}"], times[f"plainpass_{loss}"]) for loss in ("cce", "lq")}
    table = Table(
        f"Trainer vs a plain per-batch loop, epoch by epoch: digits quick preset (MLP 64-256-256-10, "
        f"batch {spec.batch_size}, {data.n_train} training images, uniform noise 0.4, {device.type})",
        ["loss", "plain loop: ms per epoch (baseline)", "lab trainer: ms per epoch", "lab / plain"],
        [
            [label, f"{ms[f'plain_{loss}']:.2f}", f"{ms[f'lab_{loss}']:.2f}", fmt_x(lab_vs_plain[loss])]
            for loss, label in (("cce", "CCE"), ("lq", f"Lq (q = {spec.q:g})"))
        ]
        + [["Lq / CCE", fmt_x(lq_vs_cce["plain"]), fmt_x(lq_vs_cce["lab"]), ""]],
        f"{rounds} rounds of one epoch of each contender in alternating order, after {WARMUP} "
        "untimed epochs each; medians, and medians of per-round ratios. A lab epoch is complete "
        "(training pass, evaluation, the metrics row: training-pass metrics, f_y histograms, loss "
        "sum); a plain one trains and computes validation and test accuracy. Both read the same "
        "device tensors and step torch.optim.SGD.",
    )
    passes = Table(
        "The training pass alone (the same contenders' batches, without evaluation and the metrics row)",
        ["loss", "plain loop: ms per pass (baseline)", "lab trainer (train_one_epoch): ms per pass", "lab / plain"],
        [
            [label, f"{ms[f'plainpass_{loss}']:.2f}", f"{ms[f'labpass_{loss}']:.2f}", fmt_x(pass_vs_plain[loss])]
            for loss, label in (("cce", "CCE"), ("lq", f"Lq (q = {spec.q:g})"))
        ],
        "Timed in the same rounds as the epochs above. The lab's pass also keeps each batch's logits "
        "and makes the training-set metrics (accuracies, memorisation, f_y histograms) from them.",
    )
    summary = [
        f"lab / plain epoch time: CCE {fmt_x(lab_vs_plain['cce'])}, Lq {fmt_x(lab_vs_plain['lq'])}",
        f"lab / plain training pass: CCE {fmt_x(pass_vs_plain['cce'])}, Lq {fmt_x(pass_vs_plain['lq'])}",
        f"lab Lq / CCE epoch time: {lq_vs_cce['lab']:.3f} (plain loop: {lq_vs_cce['plain']:.3f})",
    ]
    if reference:
        summary = [f"{REFERENCE_NOTE} {line}" for line in summary]
    name = f"Trainer (bench/bench_trainer.py, {device.type}, {torch.get_num_threads()} thread(s))"
    return Report(name, facts, [table, passes], summary)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=150, help="timed epochs of each contender (default: 150)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device (default: cpu)")
    args = parser.parse_args(argv)
    report = run(args.rounds, args.threads, args.device)
    print(report.markdown())
    return report


if __name__ == "__main__":
    main()
