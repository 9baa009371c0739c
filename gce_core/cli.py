"""Command line of gce_core: `python -m gce_core train|compare|bounds`.

Every RunSpec field is an option (`--noise-rate 0.4`); a preset fills the rest. Bad input gets one
line on stderr naming the problem and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import typing
from pathlib import Path
from typing import Any

from gce_core.bounds import excess_risk_bound, loss_bounds
from gce_core.checkpoint import peek_epoch
from gce_core.data import DATASETS, DatasetNotFoundError
from gce_core.losses import LOSS_NAMES, check_k, check_q, get_loss
from gce_core.messages import clip, clip_quotes
from gce_core.metrics import SUMMARY_KEYS
from gce_core.spec import (
    OTHER_LOSS_PARAMS,
    PRESET_NAMES,
    RunSpec,
    SpecError,
    from_preset,
    parse_spec,
)

USAGE_ERROR = 2


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and a hint (not the usage block), exit code 2;
    its subcommands' parsers are Parsers too. A long bad value is quoted short."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {clip_quotes(message)}\n(`{self.prog} --help` lists the options)", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def error_line(exc: BaseException) -> str:
    """An exception as the one line a refusal prints, long values quoted short."""
    return "error: " + clip_quotes(" ".join(str(exc).split("\n")[:3]))


# --- spec options, generated from RunSpec so they never drift ---------------------------------
def _option_type(annotation: Any):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args and typing.get_origin(annotation) is not tuple else annotation
    if typing.get_origin(base) is typing.Literal:
        return str, list(typing.get_args(base))
    if typing.get_origin(base) is tuple or base is tuple:
        return (lambda text: tuple(int(x) for x in text.split(",") if x.strip())), None
    return (base if base in (int, float, str) else str), None


def add_spec_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One option per RunSpec field; help shows the field's default and meaning."""
    group = parser.add_argument_group("run spec (defaults come from --preset, then RunSpec)")
    group.add_argument("--preset", choices=PRESET_NAMES, help="start from a preset (default: none)")
    group.add_argument("--spec", type=Path, help="a spec JSON file to start from (default: none)")
    for name, info in RunSpec.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        default = info.default
        desc = (info.description or "").replace("%", "%%")
        help_text = f"{desc} (default: {default})" if desc else f"(default: {default})"
        if info.annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        conv, choices = _option_type(info.annotation)
        group.add_argument(flag, dest=name, type=conv, choices=choices, default=None, help=help_text)


def spec_from_args(args: argparse.Namespace, **extra: Any) -> RunSpec:
    """Build the spec: --spec file, then preset fields, then explicit options, then ``extra``."""
    fields: dict[str, Any] = {}
    if args.spec is not None:
        where = clip(str(args.spec))
        try:
            loaded = json.loads(args.spec.read_text())
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            raise UsageError(f"--spec {where}: {clip(str(exc), 200)}") from None
        except RecursionError:
            raise UsageError(f"--spec {where}: nested too deeply to be a run spec") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--spec {where}: a spec file holds one JSON object ({{\"loss\": \"lq\", ...}}), "
                             f"not a {type(loaded).__name__}")
        fields.update(loaded)
    explicit = {k: getattr(args, k) for k in RunSpec.model_fields if getattr(args, k, None) is not None}
    fields.update(explicit)
    fields.update(extra)
    if args.preset:
        return from_preset(args.preset, fields.pop("dataset", "digits"), **fields)
    return parse_spec(fields)


# --- progress --------------------------------------------------------------------------------
def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", file=sys.stderr, dynamic_ncols=True, leave=False)


def _fmt_acc(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


# --- train -------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from gce_core.train import train

    spec = spec_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    metrics_path = out / "metrics.jsonl"
    done = peek_epoch(out, spec.to_json())
    # Keep only rows the checkpoint covers: a resumed run re-runs later epochs exactly.
    kept = []
    if metrics_path.exists():
        kept = [line for line in metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["epoch"] <= done]
    metrics_path.write_text("".join(line + "\n" for line in kept))
    bar = _progress(spec.epochs, spec.label())
    bar.update(done)

    def on_epoch(row: dict) -> None:
        with metrics_path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        bar.update(1)
        bar.set_postfix(test=_fmt_acc(row["test_acc"]), val=_fmt_acc(row["val_acc"]))

    summary = train(spec, on_epoch=on_epoch, checkpoint_dir=out)
    bar.close()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{spec.label()}: test accuracy at best validation epoch {summary['best_val_epoch']}: "
        f"{_fmt_acc(summary['test_acc_at_best_val'])}%  (last {_fmt_acc(summary['last_test_acc'])}%, "
        f"best {_fmt_acc(summary['best_test_acc'])}%)  -> {out}"
    )
    return 0


# --- compare -------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def compare_table(rows: list[tuple[str, list[dict]]]) -> str:
    """Plain-text table: one line per loss, mean ± std over seeds of each summary key."""
    heads = ("loss", "test @ best val", "last epoch", "best test")
    width = max([20, *(len(label) for label, _ in rows)])
    lines = [rows_fmt := f"{heads[0]:<{width}} {heads[1]:>18} {heads[2]:>18} {heads[3]:>18}"]
    lines.append("-" * len(rows_fmt))
    for label, summaries in rows:
        cells = [_mean_std([s[k] for s in summaries if s[k] is not None]) for k in
                 ("test_acc_at_best_val", "last_test_acc", "best_test_acc")]
        lines.append(f"{label:<{width}} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18}")
    return "\n".join(lines)


def cmd_compare(args: argparse.Namespace) -> int:
    from gce_core.train import train

    losses = [get_loss(x) for x in args.losses.split(",") if x.strip()]
    if not losses:
        raise UsageError("--losses names no loss")
    base = spec_from_args(args, loss=losses[0].name)
    # A loss parameter given on the command line goes to every loss that takes it (--q 0.6 to
    # lq and agce alike); the others take their own defaults.
    given = {name: getattr(args, name) for name in ("k", *OTHER_LOSS_PARAMS) if getattr(args, name, None) is not None}
    specs = [[base.with_loss(loss.name, seed=base.seed + i, **{n: v for n, v in given.items() if n in loss.defaults})
              for i in range(args.seeds)] for loss in losses]
    noise = "no noise" if base.noise == "none" else f"{base.noise} noise {base.noise_rate:g}"
    print(f"{base.dataset}, {noise}, {base.model}, {base.epochs} epochs, {args.seeds} seed(s); "
          f"test accuracy % (mean ± std over seeds)", flush=True)
    bar = _progress(sum(s.epochs for g in specs for s in g), "compare")
    rows = []
    for group in specs:
        summaries = []
        for spec in group:
            bar.set_description(spec.label())
            summaries.append(train(spec, on_epoch=lambda _row: bar.update(1)))
        rows.append((group[0].loss_label(), summaries))
    bar.close()
    print(compare_table(rows))
    return 0


# --- bounds -------------------------------------------------------------------------------------
def cmd_bounds(args: argparse.Namespace) -> int:
    c, q, k = args.classes, check_q(args.q), check_k(args.k)
    if c < 2:
        raise UsageError(f"--classes must be at least 2, got {c}")
    print(f"loss summed over all {c} labels, for any softmax output (q = {q:g}, k = {k:g}; "
          f"other parameters at each loss's default):")
    for name in LOSS_NAMES:
        try:
            lo, hi = loss_bounds(name, c, q=q, k=k)
        except ValueError as exc:
            print(f"  {name:<14} n/a ({exc})")
            continue
        hi_text = "inf" if math.isinf(hi) else f"{hi:.4f}"
        print(f"  {name:<14} [{lo:.4f}, {hi_text}]  width {hi - lo:.4f}")
    if args.rate is not None:
        print(f"excess-risk bound A under uniform noise {args.rate:g}: {excess_risk_bound(c, q, args.rate):.4f}")
    return 0


# --- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m gce_core", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_train = sub.add_parser("train", help="train one run and write spec.json, metrics.jsonl, summary.json")
    add_spec_options(p_train)
    p_train.add_argument("--out", required=True, help="output folder (resumes if it holds a checkpoint)")
    p_train.set_defaults(func=cmd_train)

    p_cmp = sub.add_parser("compare", help="train several losses on the same data and noise, print a table")
    add_spec_options(p_cmp, skip=("loss",))
    p_cmp.add_argument("--losses", default="cce,mae,lq", help="comma-separated losses (default: cce,mae,lq)")
    p_cmp.add_argument("--seeds", type=int, default=1, help="runs per loss, seeds seed..seed+N-1 (default: 1)")
    p_cmp.set_defaults(func=cmd_compare)

    p_b = sub.add_parser("bounds", help="print the loss-sum bounds of each loss")
    p_b.add_argument("--classes", type=int, default=10, help="number of classes c (default: 10)")
    p_b.add_argument("--q", type=float, default=0.7, help="Lq exponent (default: 0.7)")
    p_b.add_argument("--k", type=float, default=0.5, help="truncation threshold (default: 0.5)")
    p_b.add_argument("--rate", type=float, default=None, help="uniform noise rate for the excess-risk bound (default: none)")
    p_b.set_defaults(func=cmd_bounds)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "seeds", 1) < 1:
            raise UsageError("--seeds must be at least 1")
        return args.func(args)
    except (SpecError, UsageError, DatasetNotFoundError, ValueError, RuntimeError) as exc:
        print(error_line(exc), file=sys.stderr)
        return USAGE_ERROR
    except OSError as exc:  # the output folder cannot be written (read-only, disk full)
        print(error_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; a `train --out DIR` run resumes from its last checkpoint", file=sys.stderr)
        return 130


__all__ = ["DATASETS", "SUMMARY_KEYS", "build_parser", "main"]
