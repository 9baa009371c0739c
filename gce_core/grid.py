"""The paper's experiment grid: data sets x noise kinds x rates x losses x seeds, and its result
table beside the published numbers.

Pure logic, no store: :class:`Grid` expands into validated RunSpecs; :func:`build_table` turns
the runs' outcomes (whoever ran them: the job runner, a script) into a :class:`GridTable`, one
cell per (data set, loss, noise kind, rate), with mean ± std over seeds of the test accuracy at
the best noisy-validation epoch (the paper's metric), at the last epoch and at the best test
epoch, the published mean ± std (gce_core.published) and the difference. The table is written
as Markdown, CSV or LaTeX. ``python -m jobs grid`` submits a grid to the job runner and prints
its table; docs/library.md, "The paper's grid", has the details.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gce_core.data import dataset_info
from gce_core.losses import LOSS_NAMES, LOSSES, canonical_loss_name
from gce_core.noise import NOISE_KINDS, class_map_description
from gce_core.published import Published, published
from gce_core.spec import RunSpec, SpecError, from_preset, parse_spec

# Fields that do not change what a run computes: runs equal in every other field are the same
# run, and a grid reuses a finished one instead of training it again.
IDENTITY_IGNORED = ("name", "device", "data_root", "download", "compile")
METRICS = ("test_acc_at_best_val", "last_test_acc", "best_test_acc")
METRIC_TITLES = {
    "test_acc_at_best_val": "test accuracy at the best noisy-validation epoch (the paper's metric)",
    "last_test_acc": "test accuracy at the last epoch",
    "best_test_acc": "best test accuracy over the epochs (optimistic: it peeks at the test set)",
}
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "fashion_mnist": "Fashion-MNIST",
                  "digits": "digits"}
NOISE_TITLES = {"uniform": "uniform", "uniform_any": "uniform (any class)", "class_dependent": "class-dep",
                "open_set": "open-set", "none": "clean"}
DATASET_ORDER = ("cifar10", "cifar100", "fashion_mnist", "digits")
# The paper's loss order (CCE, MAE, then the robust ones, Lq and truncated Lq last), then the others.
LOSS_ORDER = ("cce", "mae", *(n for n in LOSS_NAMES if n not in ("cce", "mae", "lq", "truncated_lq")),
              "lq", "truncated_lq")

# The paper's grids. table1: its Table 1 (closed-set noise); table3: its Table 3 (open-set
# noise, CIFAR-100 images into CIFAR-10 at 40%, the rate of Wang et al., CVPR 2018, whose setup
# the paper follows; recalled, unverified). Forward correction (the paper's Forward T and T-hat
# columns) is not in the loss registry, so it is not in the grids.
PAPER_GRIDS: dict[str, dict[str, Any]] = {
    "table1": dict(
        datasets=("cifar10", "cifar100", "fashion_mnist"),
        noises=(("uniform", (0.2, 0.4, 0.6, 0.8)), ("class_dependent", (0.1, 0.2, 0.3, 0.4))),
        losses=("cce", "mae", "lq", "truncated_lq"), seeds=5,
    ),
    "table3": dict(
        datasets=("cifar10",), noises=(("open_set", (0.4,)),), losses=("cce", "lq", "truncated_lq"), seeds=5,
    ),
}


def spec_identity(spec: RunSpec) -> str:
    """What a run computes, as text: the spec's JSON without IDENTITY_IGNORED fields. Two runs
    with the same identity give the same numbers (on the same kind of device)."""
    data = spec.to_dict()
    for name in IDENTITY_IGNORED:
        data.pop(name, None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def loss_title(spec: RunSpec) -> str:
    """'CCE', 'Lq q=0.7', 'truncated Lq q=0.7 k=0.5', 'SCE alpha=0.1 beta=1 A=-4'."""
    loss = LOSSES[spec.loss]
    params = " ".join(f"{n}={v:g}" for n, v in spec.loss_params().items())
    return f"{loss.label} {params}".strip()


def _rates(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(sorted({float(v) for v in values}))


@dataclass(frozen=True)
class Grid:
    """A grid of runs: every data set x noise (kind, rate) x loss x seed, each a spec built from
    ``preset`` (None: RunSpec's defaults) for the data set, with ``overrides`` on top."""

    datasets: tuple[str, ...]
    noises: tuple[tuple[str, tuple[float, ...]], ...]
    losses: tuple[str, ...]
    seeds: tuple[int, ...]
    preset: str | None = "paper"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    label: str = "grid"

    @classmethod
    def paper(cls, table: str, **changes: Any) -> Grid:
        """The paper's grid ``table`` (PAPER_GRIDS: table1, table3) with the paper preset;
        ``changes`` replace any of its fields (``seeds`` may be a count)."""
        if table not in PAPER_GRIDS:
            raise SpecError([("paper", f"unknown paper table {table!r}; allowed: {', '.join(PAPER_GRIDS)}")])
        fields = {**PAPER_GRIDS[table], "preset": "paper", "label": table}
        fields.update({k: v for k, v in changes.items() if v is not None})
        return cls.make(**fields)

    @classmethod
    def make(cls, *, datasets: Sequence[str], noises: Sequence[tuple[str, Sequence[float]]],
             losses: Sequence[str], seeds: int | Sequence[int], preset: str | None = "paper",
             overrides: Mapping[str, Any] | None = None, label: str = "grid") -> Grid:
        """A checked grid: names made canonical, rates sorted, ``seeds`` a count (0..n-1) or a
        list. SpecError naming the axis when one is empty or holds an unknown name."""
        problems: list[tuple[str, str]] = []
        try:
            root = (overrides or {}).get("data_root")  # the user's own data sets live there
            datasets = tuple(dict.fromkeys(dataset_info(d, root).name for d in datasets))
            losses = tuple(dict.fromkeys(canonical_loss_name(x) for x in losses))
        except ValueError as exc:
            raise SpecError([("grid", str(exc))]) from None
        seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(dict.fromkeys(int(s) for s in seeds))
        kinds: dict[str, tuple[float, ...]] = {}
        for kind, rates in noises:
            if kind not in NOISE_KINDS:
                problems.append(("noise", f"unknown noise {kind!r}; allowed: {', '.join(NOISE_KINDS)}"))
                continue
            kinds[kind] = _rates([*kinds.get(kind, ()), *rates])
        for axis, values in (("datasets", datasets), ("losses", losses), ("seeds", seeds), ("noise", kinds)):
            if not values and not any(p[0] == axis for p in problems):
                problems.append((axis, "a grid needs at least one"))
        if any(s < 0 for s in seeds):
            problems.append(("seeds", f"seeds must be >= 0, got {list(seeds)}"))
        if problems:
            raise SpecError(problems)
        return cls(datasets, tuple(kinds.items()), losses, seeds, preset, dict(overrides or {}), label)

    def cells(self) -> list[tuple[str, str, str, float]]:
        """(dataset, loss, noise, rate) of every cell, in the table's order."""
        return [(d, loss, kind, rate) for d in self.datasets for loss in self.losses
                for kind, rates in self.noises for rate in rates]

    def specs(self) -> list[RunSpec]:
        """Every run of the grid, validated, in cell order then seed. SpecError names the first
        cell of each problem and how many more have it, so a grid is refused whole, before
        anything is queued."""
        out: list[RunSpec] = []
        problems: dict[tuple[str, str], list[str]] = {}  # (field, message) -> the cells
        for dataset, loss, kind, rate in self.cells():
            fields = dict(self.overrides, loss=loss, noise=kind, noise_rate=rate)
            where = f"{dataset}, {loss}, {kind} {rate:g}"
            for seed in self.seeds:
                fields["name"] = f"{self.label}: {where}, seed {seed}"
                try:
                    if self.preset is None:
                        spec = parse_spec({**fields, "dataset": dataset, "seed": seed})
                    else:
                        spec = from_preset(self.preset, dataset, **fields, seed=seed)
                except SpecError as exc:
                    for problem in exc.problems:
                        problems.setdefault(problem, []).append(where)
                    break
                out.append(spec)
        if problems:
            raise SpecError([(f"{cells[0]}{f' and {len(cells) - 1} more cells' if len(cells) > 1 else ''}: {f}", m)
                             for (f, m), cells in problems.items()])
        return out

    def name(self) -> str:
        """A name for the grid's runs (group and tag), the same for the same runs: its label and
        a hash of what the runs compute, like 'table1-3fa2c1d0'."""
        digest = hashlib.sha256("\n".join(spec_identity(s) for s in self.specs()).encode()).hexdigest()[:8]
        return f"{self.label[:20]}-{digest}"


# --- results ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunOutcome:
    """One run of a grid as its runner reports it: state "done" (completed, ``summary`` set),
    "active" (queued or training), "failed" (ended without a result: failed, cancelled) or
    "missing" (not submitted)."""

    spec: RunSpec
    state: str
    summary: Mapping[str, Any] | None = None


@dataclass
class Cell:
    dataset: str
    loss: str
    loss_title: str
    noise: str
    rate: float
    runs: int = 0
    done: int = 0
    failed: int = 0
    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    configs: set[str] = field(default_factory=set)  # identities without the seed
    class_maps: set[str] = field(default_factory=set)
    paper: Published | None = None

    def mean_std(self, metric: str) -> tuple[float | None, float | None]:
        """Mean and sample std over the finished runs, in %; std None for fewer than 2 runs."""
        xs = [100 * v for v in self.values[metric]]
        if not xs:
            return None, None
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)

    @property
    def diff(self) -> float | None:
        """Our mean minus the published mean, in points (the paper's metric)."""
        mean, _ = self.mean_std("test_acc_at_best_val")
        return None if mean is None or self.paper is None else mean - self.paper.mean

    @property
    def complete(self) -> bool:
        return self.runs > 0 and self.done == self.runs

    @property
    def mixed(self) -> bool:
        """The cell pools runs of different configurations (not only seeds)."""
        return len(self.configs) > 1


@dataclass
class GridTable:
    rows: list[tuple[str, str]]  # (dataset, loss title)
    columns: list[tuple[str, float]]  # (noise, rate)
    cells: dict[tuple[str, str, str, float], Cell]

    def cell(self, row: tuple[str, str], column: tuple[str, float]) -> Cell | None:
        return self.cells.get((*row, *column))

    @property
    def runs(self) -> int:
        return sum(c.runs for c in self.cells.values())

    @property
    def done(self) -> int:
        return sum(c.done for c in self.cells.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.cells.values())

    @property
    def cells_done(self) -> int:
        return sum(c.complete for c in self.cells.values())

    def progress(self) -> str:
        """'cells 3/96 done, runs 17/480 done (2 failed)'."""
        failed = f" ({self.failed} failed)" if self.failed else ""
        return f"cells {self.cells_done}/{len(self.cells)} done, runs {self.done}/{self.runs} done{failed}"


def _order(values, order):
    rank = {v: i for i, v in enumerate(order)}
    return sorted(values, key=lambda v: (rank.get(v, len(rank)), v))


def build_table(outcomes: Iterable[RunOutcome]) -> GridTable:
    """The table of a grid's runs: rows (data set, loss with its parameters) in the paper's
    order, columns (noise kind, rate), one cell per pair that has runs."""
    cells: dict[tuple[str, str, str, float], Cell] = {}
    loss_of: dict[str, str] = {}
    for o in outcomes:
        s = o.spec
        title = loss_title(s)
        loss_of[title] = s.loss
        key = (s.dataset, title, s.noise, float(s.noise_rate))
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell(s.dataset, s.loss, title, s.noise, float(s.noise_rate),
                                     paper=published(s.dataset, s.loss, s.noise, s.noise_rate, q=s.q, k=s.k))
        cell.runs += 1
        cell.configs.add(spec_identity(s.model_copy(update={"seed": 0})))
        if s.noise == "class_dependent" and s.class_map:
            cell.class_maps.add(s.class_map)
        if o.state == "done" and o.summary is not None:
            cell.done += 1
            for m in METRICS:
                v = o.summary.get(m)
                if v is not None and math.isfinite(v):
                    cell.values[m].append(float(v))
        elif o.state == "failed":
            cell.failed += 1
    datasets = _order({k[0] for k in cells}, DATASET_ORDER)
    titles = sorted(loss_of, key=lambda t: (LOSS_ORDER.index(loss_of[t]) if loss_of[t] in LOSS_ORDER else 99, t))
    rows = [(d, t) for d in datasets for t in titles if any(k[:2] == (d, t) for k in cells)]
    kinds = _order({k[2] for k in cells}, (*NOISE_KINDS[1:], "none"))
    columns = [(kind, r) for kind in kinds for r in sorted({k[3] for k in cells if k[2] == kind})]
    return GridTable(rows, columns, cells)


# --- text ---------------------------------------------------------------------------------------
def row_title(row: tuple[str, str]) -> str:
    return f"{DATASET_TITLES.get(row[0], row[0])} · {row[1]}"


def column_title(column: tuple[str, float]) -> str:
    return f"{NOISE_TITLES.get(column[0], column[0])} {column[1]:g}"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def paper_text(p: Published | None) -> str:
    """'89.83 ± 0.20', '90.69', '89.70†' (unverified), '' (none)."""
    if p is None:
        return ""
    return _pm(p.mean, p.std) + ("" if p.verified else "†")


def cell_text(cell: Cell | None, metric: str = "test_acc_at_best_val", *, with_paper: bool = True) -> str:
    """'86.10 ± 0.50 (paper 86.98 ± 0.12, -0.88)', with ' [3/5]' while runs are missing."""
    if cell is None:
        return ""
    text = _pm(*cell.mean_std(metric))
    if with_paper and cell.paper is not None:
        diff = cell.diff
        text += f" (paper {paper_text(cell.paper)}" + ("" if diff is None else f", {diff:+.2f}") + ")"
    if not cell.complete:
        text += f" [{cell.done}/{cell.runs}" + (f", {cell.failed} failed" if cell.failed else "") + "]"
    if cell.mixed:
        text += " (mixed configs)"
    return text


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(r) for r in rows)])


def notes(table: GridTable) -> list[str]:
    """Footnotes: the sources of the published numbers shown, unverified ones, class maps."""
    out = []
    sources = sorted({c.paper.source for c in table.cells.values() if c.paper is not None})
    out += [f"Published: {s}." for s in sources]
    if any(c.paper is not None and not c.paper.verified for c in table.cells.values()):
        out.append("† recalled, not checked against the paper: for orientation only.")
    if any(c.paper is None for c in table.cells.values()):
        out.append("A cell without 'paper' has no published number in gce_core/published.py.")
    maps = sorted({m for c in table.cells.values() for m in c.class_maps})
    if maps:
        out += [f"Class-dependent map {m}: {class_map_description(m)}" for m in maps]
    if any(c.mixed for c in table.cells.values()):
        out.append("(mixed configs): the cell pools runs that differ in more than the seed.")
    return out


def to_markdown(table: GridTable, title: str = "") -> str:
    """The paper's metric with the published numbers beside it, then the last epoch and the best
    test epoch; progress and footnotes under them."""
    parts = [f"## {title}"] if title else []
    heads = ["data · loss", *(column_title(c) for c in table.columns)]
    for metric in METRICS:
        main = metric == "test_acc_at_best_val"
        parts.append(f"Test accuracy %, mean ± std over seeds: {METRIC_TITLES[metric]}"
                     + ("; in brackets the paper's mean ± std and our difference." if main else "."))
        parts.append(_md_table(heads, [[row_title(r), *(cell_text(table.cell(r, c), metric, with_paper=main)
                                                        for c in table.columns)] for r in table.rows]))
    parts.append(table.progress() + ".")
    parts += notes(table)
    return "\n\n".join(parts) + "\n"


CSV_COLUMNS = ("dataset", "loss", "noise", "rate", "runs", "done", "failed",
               *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")),
               "paper_mean", "paper_std", "diff", "paper_verified", "paper_source", "class_maps")


def to_csv(table: GridTable) -> str:
    """One line per cell (long format), accuracies in %; empty where there is no number."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)

    def num(x):
        return "" if x is None else f"{x:.4f}"

    for r in table.rows:
        for c in table.columns:
            cell = table.cell(r, c)
            if cell is None:
                continue
            stats = [num(v) for m in METRICS for v in cell.mean_std(m)]
            p = cell.paper
            w.writerow([cell.dataset, cell.loss_title, cell.noise, f"{cell.rate:g}", cell.runs, cell.done,
                        cell.failed, *stats, num(p and p.mean), num(p and p.std), num(cell.diff),
                        "" if p is None else str(p.verified).lower(), "" if p is None else p.source,
                        " ".join(sorted(cell.class_maps))])
    return out.getvalue()


_TEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text).replace("·", "--").replace("†", r"$^\dagger$")


def to_latex(table: GridTable, caption: str = "") -> str:
    """A tabular of the paper's metric: '$86.10 \\pm 0.50$ (86.98)' per cell, the paper's mean
    in brackets (a dagger where unverified)."""
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_tex(caption)}}}")
    lines += [r"\begin{tabular}{l" + "c" * len(table.columns) + "}", r"\toprule",
              " & ".join(["data / loss", *(_tex(column_title(c)) for c in table.columns)]) + r" \\", r"\midrule"]
    for r in table.rows:
        cells = []
        for c in table.columns:
            cell = table.cell(r, c)
            mean, std = cell.mean_std("test_acc_at_best_val") if cell else (None, None)
            text = "--" if mean is None else (f"${mean:.2f}$" if std is None else f"${mean:.2f} \\pm {std:.2f}$")
            if cell is not None and cell.paper is not None:
                text += f" ({cell.paper.mean:.2f}" + ("" if cell.paper.verified else r"$^\dagger$") + ")"
            cells.append(text)
        lines.append(" & ".join([_tex(row_title(r)), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


FORMATS = {"md": to_markdown, "csv": to_csv, "tex": to_latex}


def render(table: GridTable, fmt: str, title: str = "") -> str:
    """The table as ``fmt``: "md", "csv" or "tex"."""
    if fmt == "csv":
        return to_csv(table)
    if fmt == "tex":
        return to_latex(table, title)
    if fmt == "md":
        return to_markdown(table, title)
    raise ValueError(f"unknown table format {fmt!r}; allowed: {', '.join(FORMATS)}")

