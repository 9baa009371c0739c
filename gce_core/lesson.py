"""The guided lesson: five short steps in the paper's order, each a question for the class and
the runs whose results answer it. Pure data and specs; the job runner prepares the runs
(`python -m jobs lesson --prepare`), the lab's Lesson page asks and reveals.

Every step trains the embedded 8x8 digits (an MLP, 40 epochs, 40% uniform noise as in the
lab's quick demo, two seeds): seconds per run on a CPU, so a step without stored runs fills in
while the class watches.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gce_core.losses import LOSSES
from gce_core.spec import RunSpec, from_preset

SEEDS = (0, 1)
EPOCHS = 40
RATE = 0.4
# Fields that do not change what a run computes (where it ran, what it is called): two runs that
# differ only in these answer the same question.
IGNORED_FIELDS = ("name", "data_root", "download", "device", "compile")
_LOSS_PARAM_FIELDS = frozenset(p.name for loss in LOSSES.values() for p in loss.params)


def _base(**changes: Any) -> RunSpec:
    fields = dict(noise="uniform", noise_rate=RATE, epochs=EPOCHS, q=0.7, k=0.5, seed=0)
    fields.update(changes)
    return from_preset("quick", "digits", **fields)


@dataclass(frozen=True)
class LessonStep:
    """One step: ``question`` with ``choices`` (``answer`` is the index of the right one), what
    the reveal shows (``view``: "curves", "sweep_q", "bounds" or "pruning") and its runs."""

    key: str
    title: str
    question: str
    choices: tuple[str, ...]
    answer: int
    explanation: str
    view: str
    specs: tuple[RunSpec, ...] = field(repr=False)
    metrics: tuple[str, ...] = ("test_acc",)
    short: str = ""  # a few words for the step's link

    @property
    def group(self) -> str:
        """The group name its runs are queued under."""
        return f"lesson {self.key}: {self.title}"


def _seeded(*specs: RunSpec) -> tuple[RunSpec, ...]:
    return tuple(s.model_copy(update={"seed": seed}) for s in specs for seed in SEEDS)


def steps() -> tuple[LessonStep, ...]:
    """The lesson, in the paper's order."""
    lq_qs = (0.1, 0.4, 0.7, 1.0)
    return (
        LessonStep(
            "memorise", "Noise makes CCE memorise",
            "We train the same network with the usual cross entropy (CCE), once on clean labels and "
            "once with 40% of the training labels replaced by random ones. What happens to the "
            "noisy run's test accuracy as training goes on?",
            ("It climbs as high as the clean run's",
             "It climbs, then falls: the network starts learning the wrong labels by heart",
             "It never climbs above chance"),
            1,
            "CCE weighs every sample alike, however sure the network is that its label is wrong. "
            "Once the clean samples are learned, the only way to lower the loss is to fit the "
            "flipped ones: memorisation rises and test accuracy falls from its peak.",
            "curves", _seeded(_base(loss="cce", noise="none", noise_rate=0.0), _base(loss="cce")),
            ("test_acc", "memorised"), "CCE memorises",
        ),
        LessonStep(
            "mae", "MAE resists the noise, but learns slowly",
            "Mean absolute error (MAE) is known to be robust to label noise. Trained on the same 40% "
            "noisy labels, how does it compare with CCE?",
            ("Better than CCE in every epoch",
             "It does not memorise, but it learns slowly and may end below CCE's peak",
             "The same as CCE"),
            1,
            "MAE's gradient weight is 2 f_y: samples the network finds hard (small f_y), which are "
            "often the flipped ones, barely move it. That is why it resists the noise, and also why "
            "it learns slowly: hard clean samples are ignored too.",
            "curves", _seeded(_base(loss="cce"), _base(loss="mae")), ("test_acc", "memorised"), "MAE resists, slowly",
        ),
        LessonStep(
            "lq", "Lq sits between them, set by q",
            "The paper's Lq loss (1 - f_y^q) / q is CCE as q goes to 0 and MAE (halved) at q = 1. "
            "With 40% noisy labels, where is test accuracy best?",
            ("At small q (close to CCE)", "At an intermediate q, around 0.7", "At q = 1 (MAE)"),
            1,
            "Lq's gradient is CCE's multiplied by f_y^q: q trades CCE's fast learning against MAE's "
            "robustness. The paper uses q = 0.7; the curve of accuracy against q has its top in "
            "between.",
            "sweep_q",
            _seeded(*(_base(loss="lq", q=q) for q in lq_qs), _base(loss="cce"), _base(loss="mae")), short="Lq and q",
        ),
        LessonStep(
            "bounds", "The bounds explain why",
            "Add up a loss over all 10 labels a sample could have. Which loss gives the same sum "
            "whatever the network outputs?",
            ("CCE", "MAE", "Lq with q = 0.7"),
            1,
            "A loss whose sum over the labels is constant (a symmetric loss, like MAE) is tolerant to "
            "uniform noise. CCE's sum is unbounded; Lq's lies in a band [(c - c^(1-q))/q, (c-1)/q] "
            "that narrows as q grows: closer to symmetric, more robust. The dots are your runs' "
            "measured sums, inside their bands.",
            "bounds",
            _seeded(*(_base(loss="lq", q=q) for q in lq_qs), _base(loss="cce"), _base(loss="mae")),
            ("loss_sum_mean",), "The bounds",
        ),
        LessonStep(
            "truncate", "Truncation prunes the flipped samples",
            "Truncated Lq sets aside, every few epochs, the samples whose label the network gives "
            "a probability f_y at most k = 0.5. Which samples does it set aside?",
            ("Mostly the ones with flipped labels", "A random mix of clean and flipped ones",
             "Mostly clean ones the network finds hard"),
            0,
            "A flipped sample's given label is one the network rarely believes, so its f_y stays low "
            "and it is pruned; precision is the share of pruned samples that really were flipped. "
            "Training then ignores them, and test accuracy holds up.",
            "pruning",
            _seeded(_base(loss="lq"), _base(loss="truncated_lq", prune_start=10, prune_every=5)),
            ("test_acc", "prune_precision"), "Truncation",
        ),
    )


def step_keys() -> tuple[str, ...]:
    return tuple(s.key for s in steps())


def get_step(key: str) -> LessonStep:
    """The step named ``key`` (one of step_keys()); ValueError naming the allowed ones."""
    for step in steps():
        if step.key == key:
            return step
    raise ValueError(f"unknown lesson step {key!r}; allowed: {', '.join(step_keys())}")


def spec_key(spec: RunSpec) -> str:
    """What two runs must share to stand for each other in the lesson: every field but
    IGNORED_FIELDS, as canonical JSON."""
    untaken = _LOSS_PARAM_FIELDS - set(spec.loss_params())  # e.g. q of a CCE run: never read
    data = {k: v for k, v in spec.to_dict().items() if k not in IGNORED_FIELDS and k not in untaken}
    return json.dumps(data, sort_keys=True)


def all_specs(keys: Iterable[str] | None = None) -> list[RunSpec]:
    """The distinct specs of the given steps (default: all), in lesson order."""
    wanted = set(keys) if keys is not None else None
    seen: dict[str, RunSpec] = {}
    for step in steps():
        if wanted is None or step.key in wanted:
            for spec in step.specs:
                seen.setdefault(spec_key(spec), spec)
    return list(seen.values())
