"""Training throughput of the lab's trainer on CIFAR-shaped data, against the device's peak.

Runs gce_core.train.train_one_epoch itself (whole data set on the device, batches by index
slices, pad-crop and flip on the device, and on CUDA bf16 autocast with channels_last) on random
3x32x32 images, and reports images/s, the FLOPs of a training step counted with
torch.utils.flop_counter (forward and backward), the FLOP/s that makes, and its share of a peak
measured in the same process (a large matmul: fp32 on the CPU, bf16 on CUDA) and, on GPUs whose
figure is known, of the vendor's dense bf16 peak.

    python -m bench.bench_throughput                       # CPU: cnn and resnet18, fp32
    python -m bench.bench_throughput --device cuda         # CUDA: resnet34, bf16, channels_last
    python -m bench.bench_throughput --device cuda --compile   # + torch.compile (long-lived worker)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import Report, Table, device_facts, matmul_peak, set_threads, sync
from gce_core.experiment_data import ExperimentData
from gce_core.losses import loss_values
from gce_core.spec import parse_spec
from gce_core.train import compile_model, device_autocast, new_state, train_one_epoch

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of the device name.
NOMINAL_BF16_PEAK = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
}
DEFAULTS = {  # device -> (models, batch, steps per timed epoch)
    "cpu": (("cnn", "resnet18"), 64, 3),
    "cuda": (("resnet34",), 512, 20),
}


def nominal_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in NOMINAL_BF16_PEAK.items() if key in name), None)


def random_cifar(n: int, device: torch.device, seed: int = 0) -> ExperimentData:
    """CIFAR-shaped random data (n training images, 10 classes) as the trainer's tensors."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    few = min(n, 256)
    return ExperimentData(
        x_train=torch.randn(n, 3, 32, 32, generator=g).to(device),
        y_train=y.to(device),
        y_train_clean=y.to(device),
        is_noisy=torch.zeros(n, dtype=torch.bool, device=device),
        x_eval=torch.randn(2 * few, 3, 32, 32, generator=g).to(device),  # validation, then test
        y_val=y[:few].to(device),
        y_test=y[:few].to(device),
        num_classes=10,
        transition=torch.eye(10),
        realised_rate=0.0,
    )


def step_flops(spec, st, data: ExperimentData, device: torch.device) -> int:
    """FLOPs of one training step's forward and backward on a batch, counted by FlopCounterMode."""
    xb = data.x_train[: spec.batch_size]
    if device.type == "cuda":
        xb = xb.contiguous(memory_format=torch.channels_last)
    st.model.train()
    with FlopCounterMode(display=False) as counter:
        with device_autocast(device):
            logits = st.model(xb)
        loss_values(logits, data.y_train[: spec.batch_size], spec.loss, q=spec.q).backward()
    st.model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(model: str, device: torch.device, batch: int, steps: int, repeats: int, compile_: bool) -> dict:
    spec = parse_spec(dict(dataset="cifar10", model=model, batch_size=batch, epochs=1, augment=True,
                           loss="lq", device=device.type, compile=compile_))  # fmt: skip
    data = random_cifar(batch * steps, device)
    st = new_state(spec, data, device)
    if compile_ and device.type == "cuda":
        st.compiled = compile_model(st.model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    flops = step_flops(spec, st, data, device)
    train_one_epoch(spec, st, data, device)  # warm-up (cudnn autotune, compile)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        train_one_epoch(spec, st, data, device)
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    images_per_s = batch * steps / seconds
    return {"model": model, "batch": batch, "images_per_s": images_per_s,
            "flops_per_image": flops / batch, "flops_per_s": flops / batch * images_per_s}  # fmt: skip


def run(device_name: str = "cpu", models: list[str] | None = None, batch: int | None = None,
        steps: int | None = None, repeats: int = 3, threads: int | None = None,
        compile_: bool = False) -> Report:  # fmt: skip
    set_threads(threads)
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine; use --device cpu")
    default_models, default_batch, default_steps = DEFAULTS[device.type]
    models, batch, steps = models or list(default_models), batch or default_batch, steps or default_steps
    facts = device_facts(device)
    peak, peak_what = matmul_peak(device)  # measured again after the models; the higher counts
    nominal = nominal_peak(device)
    path = "bf16 autocast, channels_last" + (", torch.compile" if compile_ else "") if device.type == "cuda" else "fp32"
    results = [measure(model, device, batch, steps, repeats, compile_) for model in models]
    peak = max(peak, matmul_peak(device)[0])
    header = ["model", "path", "batch", "images/s", "GFLOP per image (fwd+bwd)", "achieved TFLOP/s",
              "share of measured peak"] + (["share of nominal bf16 peak"] if nominal else [])  # fmt: skip
    table = Table(
        f"Training throughput on CIFAR-shaped random data ({device.type}, train_one_epoch with "
        "on-device pad-crop and flip)",
        header,
        note=f"Measured peak: {peak / 1e12:.3f} TFLOP/s ({peak_what}, same process; on a shared "
        "machine a busy spell can make it low, and a share above 100% then)"
        + (f"; nominal dense bf16 peak: {nominal / 1e12:.0f} TFLOP/s" if nominal else "")
        + f". Median of {repeats} timed epochs of {steps} steps after one warm-up epoch.",
    )
    for model, m in zip(models, results, strict=True):
        row = [model, path, str(batch), f"{m['images_per_s']:.1f}", f"{m['flops_per_image'] / 1e9:.3f}",
               f"{m['flops_per_s'] / 1e12:.3f}", f"{m['flops_per_s'] / peak:.1%}"]  # fmt: skip
        if nominal:
            row.append(f"{m['flops_per_s'] / nominal:.1%}")
        table.rows.append(row)
    return Report(f"Throughput (bench/bench_throughput.py, {device.type})", facts, [table])


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device (default: cpu)")
    parser.add_argument("--models", default=None, help="comma-separated models (default: cnn,resnet18 on cpu; resnet34 on cuda)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 64 on cpu, 512 on cuda)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed epoch (default: 3 on cpu, 20 on cuda)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only; default: off)")
    args = parser.parse_args(argv)
    models = args.models.split(",") if args.models else None
    report = run(args.device, models, args.batch, args.steps, args.repeats, args.threads, args.compile)
    print(report.markdown())
    return report


if __name__ == "__main__":
    main()
