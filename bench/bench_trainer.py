"""The lab's trainer against a plain training loop, on the same network, data and spec.

The plain loop is how the paper's public code trains: a DataLoader over a TensorDataset yields
each batch (per-sample indexing and collation), the loss and accuracy are read back with .item()
per batch, and validation and test accuracy are computed every epoch through DataLoaders. The
lab's trainer (gce_core.train.train) does the same job and more (per-sample training metrics,
f_y histograms, the loss sum) from whole-dataset tensors.

Also: the lab's epoch time with Lq against CCE (Lq's closed-form gradient should cost within
a few percent of CCE's fused kernels).

    python -m bench.bench_trainer [--epochs 200] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from bench.common import (
    REFERENCE_NOTE,
    Report,
    Table,
    device_facts,
    fmt_s,
    fmt_x,
    interleaved,
    matmul_peak,
    paired_ratio,
    set_threads,
)
from gce_core.experiment_data import ExperimentData, build_experiment_data
from gce_core.models import init_seeded
from gce_core.spec import RunSpec, parse_spec
from gce_core.train import EVAL_BATCH, new_state, run_epochs, train

SPEC = dict(
    dataset="digits", model="mlp", batch_size=128, noise="uniform", noise_rate=0.4, device="cpu"
)


def paper_style_lq(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Lq as the paper's public code writes it: softmax, gather, (1 - p^q) / q."""
    p_y = torch.gather(F.softmax(logits, dim=1), 1, y[:, None])
    return ((1 - p_y**q) / q).mean()


class PlainLoop:
    """Train ``spec`` the plain way: DataLoader batches, .item() per batch, per-epoch eval.
    ``epoch()`` runs one epoch (for epoch-by-epoch timing), ``run()`` all of them."""

    def __init__(self, spec: RunSpec, data: ExperimentData):
        self.spec = spec
        self.model = init_seeded(spec.model, tuple(data.x_train.shape[1:]), data.num_classes, spec.seed)
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=spec.lr, momentum=spec.momentum,
            weight_decay=spec.weight_decay,
        )
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, list(spec.lr_milestones), spec.lr_gamma)
        shuffle = torch.Generator().manual_seed(spec.seed + 1)
        self.train_loader = DataLoader(
            TensorDataset(data.x_train, data.y_train), batch_size=spec.batch_size, shuffle=True,
            generator=shuffle,
        )
        self.val_loader = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=EVAL_BATCH)
        self.test_loader = DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=EVAL_BATCH)
        self.history: list[tuple[float, float, float, float]] = []

    def accuracy(self, loader) -> float:
        model = self.model
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in loader:
                correct += model(x).argmax(1).eq(y).sum().item()
                total += y.size(0)
        model.train()
        return correct / total

    def epoch(self) -> None:
        model, opt, spec = self.model, self.opt, self.spec
        model.train()
        loss_sum = correct = seen = 0.0
        for x, y in self.train_loader:
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y) if spec.loss == "cce" else paper_style_lq(logits, y, spec.q)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * y.size(0)
            correct += logits.argmax(1).eq(y).sum().item()
            seen += y.size(0)
        self.sched.step()
        self.history.append(
            (loss_sum / seen, correct / seen, self.accuracy(self.val_loader), self.accuracy(self.test_loader))
        )

    def run(self) -> dict:
        for _ in range(self.spec.epochs):
            self.epoch()
        return {"last_test_acc": self.history[-1][3]}


def plain_loop(spec: RunSpec, data: ExperimentData) -> dict:
    """A whole plain-loop run of ``spec`` (see PlainLoop)."""
    return PlainLoop(spec, data).run()


def run_flops(spec: RunSpec, data: ExperimentData) -> int:
    """FLOPs of one run of ``spec`` (both trainers do the same products): every training step's
    forward and backward, plus the per-epoch validation and test forward passes, counted with
    torch.utils.flop_counter on the model."""
    model = init_seeded(spec.model, tuple(data.x_train.shape[1:]), data.num_classes, spec.seed)

    def counted(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    def step(m: int) -> int:
        return counted(lambda: F.cross_entropy(model(data.x_train[:m]), data.y_train[:m]).backward())

    def forward(x: torch.Tensor) -> int:
        with torch.no_grad():
            return counted(lambda: model(x))

    n, b = data.n_train, spec.batch_size
    per_epoch = (n // b) * step(b) + (step(n % b) if n % b else 0)
    return spec.epochs * (per_epoch + forward(data.x_val) + forward(data.x_test))


def epoch_times(
    specs: dict[str, RunSpec], data: ExperimentData, rounds: int, plain: tuple[str, ...] = (),
    threads_used: dict[str, dict[int, int]] | None = None,
) -> dict[str, list[float]]:
    """Seconds of single complete epochs of each spec's run, alternating between the runs
    ``rounds`` times: a per-epoch cost, many short samples, so that a slow spell of the machine
    hits every contender alike. Lab epochs are the trainer's (training pass, evaluation,
    metrics row); the specs named in ``plain`` are also timed as plain-loop epochs, under the
    name "plain_<name>". ``threads_used``: filled with each lab run's epochs per thread count
    (gce_core.threads.ThreadTuner; empty for a run without a tuner)."""
    device = torch.device("cpu")
    states = {name: new_state(spec, data, device) for name, spec in specs.items()}
    for spec in specs.values():
        if rounds + 2 > spec.epochs:
            raise SystemExit(f"--epoch-rounds {rounds} needs specs of at least {rounds + 2} epochs")

    def one_epoch(name: str):
        return lambda: run_epochs(specs[name], states[name], data, device, states[name].epoch + 1)

    contenders = {name: one_epoch(name) for name in specs}
    for name in plain:
        contenders[f"plain_{name}"] = PlainLoop(specs[name], data).epoch
    times = interleaved(contenders, rounds, warmup=2)
    if threads_used is not None:
        for name, st in states.items():
            threads_used[name] = dict(sorted(st.tuner.used.items())) if st.tuner is not None else {}
    return times


def threads_note(threads_used: dict[str, dict[int, int]]) -> str:
    """Which thread counts the lab's tuner ran its epochs with, per loss."""
    if not any(threads_used.values()):
        return "The lab ran every epoch with the thread count above (one count: no tuner)."
    parts = [
        f"{loss.upper() if loss == 'cce' else 'Lq'}: "
        + ", ".join(f"{n} epoch(s) with {count} thread(s)" for count, n in used.items())
        for loss, used in threads_used.items()
    ]
    return "Thread counts the lab's tuner picked (gce_core.threads): " + "; ".join(parts) + "."


def run(
    epochs: int = 200, repeats: int = 5, threads: int | None = None, epoch_rounds: int = 150,
    reference: bool = False,
) -> Report:
    set_threads(threads)
    facts = device_facts("cpu")
    specs = {loss: parse_spec(dict(SPEC, loss=loss, epochs=epochs)) for loss in ("cce", "lq")}
    data = build_experiment_data(specs["cce"], "cpu")  # the same for both losses (same seed)
    flops = run_flops(specs["cce"], data)
    peak, peak_what = matmul_peak("cpu")
    times = interleaved(
        {
            "plain_cce": lambda: plain_loop(specs["cce"], data),
            "lab_cce": lambda: train(specs["cce"]),
            "plain_lq": lambda: plain_loop(specs["lq"], data),
            "lab_lq": lambda: train(specs["lq"]),
        },
        repeats,
    )
    peak = max(peak, matmul_peak("cpu")[0])
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    speed_cce = paired_ratio(times["plain_cce"], times["lab_cce"])
    speed_lq = paired_ratio(times["plain_lq"], times["lab_lq"])
    # Single epochs, each pair of contenders interleaved on its own (A B B A ...): with more in
    # one rotation, some would always follow a plain epoch (its allocations, colder caches).
    lab_specs = {loss: specs[loss].model_copy(update={"epochs": epoch_rounds + 2}) for loss in specs}
    lq_threads_used: dict[str, dict[int, int]] = {}
    per_epoch = epoch_times(lab_specs, data, epoch_rounds, threads_used=lq_threads_used)
    threads_used: dict[str, dict[int, int]] = {}
    vs_plain = {
        loss: epoch_times({loss: lab_specs[loss]}, data, epoch_rounds, plain=(loss,), threads_used=threads_used)
        for loss in ("cce", "lq")
    }
    epoch_speed = {
        loss: paired_ratio(vs_plain[loss][f"plain_{loss}"], vs_plain[loss][loss]) for loss in vs_plain
    }
    lq_cost = paired_ratio(per_epoch["lq"], per_epoch["cce"])
    lq_cost_runs = paired_ratio(times["lab_lq"], times["lab_cce"])
    n_train = data.n_train
    steps = epochs * -(-n_train // SPEC["batch_size"])
    speed = Table(
        f"Trainer vs plain DataLoader loop: digits MLP 64-256-256-10, {epochs} epochs, batch 128, "
        f"{n_train} training images ({steps} steps), uniform noise 0.4",
        ["loss", "plain loop (baseline)", "lab trainer", "speed-up (plain / lab)",
         "lab: share of measured peak", "arithmetic floor"],
        [
            ["CCE", fmt_s(med["plain_cce"]), fmt_s(med["lab_cce"]), fmt_x(speed_cce),
             f"{flops / med['lab_cce'] / peak:.0%}", fmt_s(flops / peak)],
            ["Lq (q = 0.7)", fmt_s(med["plain_lq"]), fmt_s(med["lab_lq"]), fmt_x(speed_lq),
             f"{flops / med['lab_lq'] / peak:.0%}", fmt_s(flops / peak)],
        ],
        f"Median of {repeats} interleaved runs each; speed-up is the median of per-round ratios. "
        "Both include per-epoch validation and test accuracy; the lab also computes its full "
        "metrics row (training-pass metrics, f_y histograms, loss sum) every epoch. "
        f"A run is {flops / 1e9:.1f} GFLOP (torch.utils.flop_counter: training forward and "
        f"backward, and the evaluation passes); the arithmetic floor is that at the measured "
        f"peak of {peak / 1e9:.0f} GFLOP/s ({peak_what}, same process).",
    )
    epoch_med = {k: statistics.median(v) * 1e3 for k, v in per_epoch.items()}
    vs_plain_med = {
        (loss, who): statistics.median(v) * 1e3 for loss, t in vs_plain.items() for who, v in t.items()
    }
    by_epoch = Table(
        "Trainer vs plain DataLoader loop, epoch by epoch (same network, data and spec)",
        ["loss", "plain loop: ms per epoch (baseline)", "lab trainer: ms per epoch",
         "speed-up (plain / lab)"],
        [
            [label, f"{vs_plain_med[loss, f'plain_{loss}']:.2f}", f"{vs_plain_med[loss, loss]:.2f}",
             fmt_x(epoch_speed[loss])]
            for loss, label in (("cce", "CCE"), ("lq", "Lq (q = 0.7)"))
        ],
        f"{epoch_rounds} single epochs of the plain loop and the lab, in alternating order, for "
        "each loss on its own; speed-up is the median of the per-round ratios. The whole runs above take minutes of wall time in all, "
        "and this machine's speed drifts within them; single epochs (milliseconds) put a plain "
        "and a lab epoch of one round within milliseconds of each other. A lab epoch is complete "
        "(training pass, evaluation, metrics row); a plain one trains and computes validation "
        "and test accuracy. " + threads_note(threads_used),
    )
    lq_table = Table(
        "Lab trainer: epoch time with Lq against CCE (same spec)",
        ["loss", "ms per epoch", "epoch time vs CCE", f"whole {epochs}-epoch runs vs CCE"],
        [
            ["CCE (baseline)", f"{epoch_med['cce']:.2f}", "1.000", "1.000"],
            ["Lq (q = 0.7)", f"{epoch_med['lq']:.2f}", f"{lq_cost:.3f}", f"{lq_cost_runs:.3f}"],
        ],
        f"Epoch time: {epoch_rounds} single epochs of each run, alternating, median of the "
        "per-round ratios (a complete epoch: training pass, evaluation, metrics row). Whole runs: "
        "the runs of the table above. " + threads_note(lq_threads_used),
    )
    targets = [
        f"lab trainer >= 2x faster than the plain loop (CCE): {fmt_x(speed_cce)} in whole runs, "
        f"{fmt_x(epoch_speed['cce'])} epoch by epoch — "
        + ("met" if min(speed_cce, epoch_speed["cce"]) >= 2 else "NOT met (both must reach 2x)"),
        f"Lq epoch time <= 1.05 x CCE's: {lq_cost:.3f} — " + ("met" if lq_cost <= 1.05 else "NOT met"),
    ]
    if reference:
        targets = [f"{REFERENCE_NOTE} {t}" for t in targets]
    name = f"Trainer (bench/bench_trainer.py, {torch.get_num_threads()} thread(s))"
    return Report(name, facts, [speed, by_epoch, lq_table], targets)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs per run (default: 200)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs each (default: 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--epoch-rounds", type=int, default=150, help="alternating single epochs for Lq vs CCE (default: 150)")
    args = parser.parse_args(argv)
    report = run(args.epochs, args.repeats, args.threads, args.epoch_rounds)
    print(report.markdown())
    return report


if __name__ == "__main__":
    main()
