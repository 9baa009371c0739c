"""Regenerate the README's digits tables of losses, through the CLI.

    python -m bench.digits_table                                  # forward, forward_est at 0.4, 0.6
    python -m bench.digits_table --losses cce,mae,lq,truncated_lq --rates 0,0.4,0.6
    python -m bench.digits_table --losses sce,nce_rce,nce_mae,agce,aul,bootstrap_soft,bootstrap_hard

For each noise rate it runs `python -m gce_core compare --preset quick --dataset digits --noise
uniform --noise-rate R --seeds 3 --losses L --prune-start 20` (the README's protocol: a
64-256-256-10 MLP, 60 epochs, SGD lr 0.1, each loss at its paper's defaults; --prune-start only
matters to truncated Lq), prints each command and its table as it goes, and at the end the rows
in the README's Markdown format (test accuracy in %, mean ± std over the seeds). Extra options
after `--` go to every compare command (e.g. `-- --lr 0.01`). CPU-heavy: run it under
`nice -n 10`; a run gives the same numbers for the same spec and torch thread count.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

from gce_core.losses import get_loss
from gce_core.spec import from_preset

CELL = re.compile(r"(\d+\.\d+(?: ± \d+\.\d+)?|-)")


def compare_command(losses: list[str], rate: float, seeds: int, extra: list[str]) -> list[str]:
    noise = ["--noise", "uniform", "--noise-rate", f"{rate:g}"] if rate > 0 else []
    return [sys.executable, "-m", "gce_core", "compare", "--preset", "quick", "--dataset", "digits", *noise,
            "--seeds", str(seeds), "--losses", ",".join(losses), "--prune-start", "20", *extra]


def parse_table(out: str, losses: list[str]) -> list[list[str]]:
    """The three accuracy cells of each loss's line of a compare table, in ``losses``' order."""
    lines = [line for line in out.splitlines() if line.split() and line.split()[0] in losses]
    if len(lines) != len(losses):
        raise SystemExit(f"expected one table line per loss ({', '.join(losses)}), got:\n{out}")
    return [CELL.findall(line)[-3:] for line in lines]  # the label's own numbers come first


def label(name: str, first: bool) -> str:
    """The README's label: 'forward (estimated T) (est_share 0.25)' on a rate's first row."""
    loss = get_loss(name)
    params = ", ".join(f"{n} {v:g}" for n, v in from_preset("quick", "digits", loss=name).loss_params().items())
    return f"{loss.label} ({params})" if params and first else loss.label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--losses", default="forward,forward_est", help="comma-separated losses")
    parser.add_argument("--rates", default="0.4,0.6", help="comma-separated uniform noise rates")
    parser.add_argument("--seeds", type=int, default=3)
    args, extra = parser.parse_known_args(argv)
    extra = [x for x in extra if x != "--"]
    losses = [get_loss(x).name for x in args.losses.split(",") if x.strip()]
    rows = []
    for i, rate in enumerate(float(r) for r in args.rates.split(",")):
        cmd = compare_command(losses, rate, args.seeds, extra)
        print("$", " ".join(cmd[1:]).replace("-m gce_core", "python -m gce_core"), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        print(done.stdout, flush=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        for name, cells in zip(losses, parse_table(done.stdout, losses), strict=True):
            rows.append(f"| {rate:g} | {label(name, i == 0)} | {' | '.join(cells)} |")
    print("| noise | loss | test @ best noisy-val epoch | last epoch | best test epoch |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
