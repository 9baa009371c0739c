"""How many intra-op threads a CPU run uses, epoch by epoch, when its numbers do not depend on it.

A small network (the digits MLP) trains in steps of a few hundred microseconds. Whether two
threads beat one there depends on the moment: on a shared machine whose two vCPUs sometimes
share one physical core, a two-thread product waits for the slower half and the idle thread's
spinning slows the main one, and the same epoch that takes 8 ms with two threads takes 13 ms,
while one thread takes 10-11 ms throughout. ``ThreadTuner`` times the epochs and keeps the
faster count, probing the others now and then.

That choice is only allowed where it cannot change a result. ``make_thread_invariant`` checks
a chain's products (``chain.Chain``) at the thread counts the tuner may pick, on the run's own
shapes and layouts: a product whose bits depend on the count (BLAS splitting the sum of a small
output's weight gradient across threads) is pinned to one thread, and then the whole step is
compared. Only when every count gives bit-identical logits and gradients does a run get a tuner.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from gce_core.chain import Chain, Product

# logits -> a tensor laid out as the loss's gradient with respect to them (its values unused)
GradOfLogits = Callable[[torch.Tensor], torch.Tensor]


def candidate_counts(available: int) -> tuple[int, ...]:
    """The thread counts a tuner tries with ``available`` threads: 1, the powers of two below
    ``available``, and ``available`` itself."""
    counts = {1, max(1, available)}
    counts.update(2**i for i in range(1, max(1, available).bit_length()) if 2**i < available)
    return tuple(sorted(counts))


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` for the block (None: left as it is), then
    restored."""
    before = torch.get_num_threads()
    if count is None or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- which counts give the same bits ----------------------------------------------------------
def _traced_step(
    chain: Chain, x: torch.Tensor, grad_of_logits: GradOfLogits | None, grads: dict
) -> tuple[list[Product], list[torch.Tensor]]:
    """Run one training step (or, without ``grad_of_logits``, one evaluation forward) of the
    chain on x, with a gradient of random values (seeded) in the loss's layout; returns the
    products it ran (operands copied) and its outputs (logits, grads). Random values: a real
    loss can give an all-zero gradient (truncated Lq early on), on which every count agrees."""
    trace: list[Product] = []
    chain.trace = trace
    try:
        if grad_of_logits is None:
            logits = chain.forward(x, keep=False)
            outputs = [logits.clone()]
        else:
            logits, tape = chain.forward(x)
            grad = grad_of_logits(logits)
            grad.copy_(torch.randn(grad.shape, generator=torch.Generator().manual_seed(1)))
            chain.backward(tape, grad, grads)
            outputs = [logits.clone(), *(g.clone() for g in grads.values())]
    finally:
        chain.trace = None
    return trace, outputs


def _varies(product: Product, counts: Sequence[int]) -> bool:
    """True if the product's result (operands as traced) differs between one thread and any
    of ``counts``."""
    _key, fn, args = product
    with intra_op_threads(1):
        want = fn(*args)
    for count in counts:
        with intra_op_threads(count):
            if not torch.equal(fn(*args), want):
                return True
    return False


# (chain's layers, input shape, rows, counts, gradient layouts) -> (invariant, pinned products):
# a BLAS call's split depends on those, so one process checks each combination once.
_VERDICTS: dict[tuple, tuple[bool, frozenset]] = {}


def _verdict_key(chain: Chain, input_shape, batch_rows, eval_rows, counts, grad_of_logits) -> tuple:
    lead = (chain.runs,) if chain.stacked else ()
    layers = tuple((name, tuple(p.shape), p.stride()) for name, p in chain.params.items())
    layouts = tuple(grad_of_logits(torch.zeros(*lead, r, chain.out_features)).stride() for r in batch_rows)
    return (tuple(chain.steps), layers, tuple(input_shape), tuple(batch_rows),
            tuple(eval_rows), tuple(counts), layouts)


@torch.inference_mode()
def make_thread_invariant(
    chain: Chain,
    input_shape: Sequence[int],
    batch_rows: Iterable[int],
    eval_rows: Iterable[int],
    counts: Sequence[int],
    grad_of_logits: GradOfLogits,
) -> bool:
    """Pin to one thread every product of ``chain`` whose result depends on the thread count,
    then check that a training step at each of ``batch_rows`` rows and an evaluation forward at
    each of ``eval_rows`` give the same bits at every count in ``counts`` as at one thread.
    The inputs and gradients are random (a BLAS call's split depends on shapes and layouts, not
    values; random values make any difference show).

    input_shape: one sample's shape (the chain's input is (rows, *input_shape), or (K, rows,
    *input_shape) for a stacked chain). Forward products are never pinned (the model's own
    forward, which the w-step of truncated Lq uses, has no pin); a count-dependent forward
    makes the chain not invariant. Returns True if the chain is invariant at all these shapes.
    """
    counts = [c for c in counts if c != 1]
    if not counts:
        return True
    batch_rows = sorted({r for r in batch_rows if r > 0})
    eval_rows = sorted({r for r in eval_rows if r > 0})
    key = _verdict_key(chain, input_shape, batch_rows, eval_rows, counts, grad_of_logits)
    if key not in _VERDICTS:
        ok = _check(chain, input_shape, batch_rows, eval_rows, counts, grad_of_logits)
        _VERDICTS[key] = ok, frozenset(chain.single_thread)
    ok, pinned = _VERDICTS[key]
    chain.single_thread.update(pinned)
    return ok


def _check(chain: Chain, input_shape, batch_rows, eval_rows, counts, grad_of_logits) -> bool:
    """make_thread_invariant's work, uncached."""
    gen = torch.Generator().manual_seed(0)
    lead = (chain.runs,) if chain.stacked else ()
    grads = {name: torch.empty_like(p) for name, p in chain.params.items()}
    cases = [(r, grad_of_logits) for r in batch_rows] + [(r, None) for r in eval_rows]
    inputs = [(torch.randn(*lead, r, *input_shape, generator=gen), g) for r, g in cases]
    for x, g in inputs:
        with intra_op_threads(1):
            trace, _ = _traced_step(chain, x, g, grads)
        for product in trace:
            key = product[0]
            if key in chain.single_thread or not _varies(product, counts):
                continue
            if key[1] == "forward":
                return False
            chain.single_thread.add(key)
    for x, g in inputs:
        with intra_op_threads(1):
            _, want = _traced_step(chain, x, g, grads)
        for count in counts:
            with intra_op_threads(count):
                _, got = _traced_step(chain, x, g, grads)
            if not all(torch.equal(a, b) for a, b in zip(got, want, strict=True)):
                return False
    return True


# --- the choice, epoch by epoch ---------------------------------------------------------------
class ThreadTuner:
    """Picks the thread count of each epoch from the epoch times seen so far.

    The run's first epoch warms up at the largest count and is not counted; then every count
    runs ``probes`` epochs in turn; from then on the count with the lowest median of its last
    ``window`` epoch times runs, and after ``reprobe_every`` epochs the count measured longest
    ago runs once, so that a change of the machine's mood is noticed: its time replaces its
    stale ones. A probe that does not win doubles the wait before the next one (up to
    ``max_reprobe_every``); one that wins resets it and runs on (and hands back within a few
    epochs if its one time was luck).

        tuner = ThreadTuner((1, 2))
        count = tuner.next_count()
        ... run the epoch with intra_op_threads(count) ...
        tuner.record(count, seconds)
    """

    def __init__(
        self, counts: Sequence[int], probes: int = 2, window: int = 3, reprobe_every: int = 16,
        max_reprobe_every: int = 128,
    ):
        if not counts:
            raise ValueError("counts: need at least one thread count")
        self.counts = tuple(counts)
        self.probes = probes
        self.reprobe_every, self.max_reprobe_every = reprobe_every, max_reprobe_every
        self.wait = reprobe_every  # epochs at the best count before the next probe
        self.times: dict[int, deque[float]] = {c: deque(maxlen=window) for c in self.counts}
        self.last_run = dict.fromkeys(self.counts, -1)  # epoch index each count last ran
        self.epochs = 0  # epochs recorded, the warm-up included
        self.since_probe = 0  # epochs at the best count since the last probe
        self.probed = False  # every count has had its first probes
        self.used: Counter[int] = Counter()  # epochs run per count, the warm-up included

    def best(self) -> int:
        """The count with the lowest median of its recent epoch times (unmeasured ones last)."""
        return min(self.counts, key=lambda c: statistics.median(self.times[c]) if self.times[c] else math.inf)

    def _unprobed(self) -> int | None:
        """The first count still short of its first probes, if any."""
        if self.probed:
            return None
        for count in self.counts:
            if len(self.times[count]) < min(self.probes, self.times[count].maxlen):
                return count
        self.probed = True
        return None

    def next_count(self) -> int:
        if self.epochs == 0:
            return max(self.counts)
        unprobed = self._unprobed()  # each count gets its probes first, in turn
        if unprobed is not None:
            return unprobed
        best = self.best()
        if len(self.counts) > 1 and self.since_probe >= self.wait:
            return min((c for c in self.counts if c != best), key=lambda c: self.last_run[c])
        return best

    def record(self, count: int, seconds: float) -> None:
        """Book an epoch that ran with ``count`` threads and took ``seconds``."""
        if self.epochs > 0:
            probing = self._unprobed() is not None
            was_best = self.best()
            reprobe = not probing and count != was_best
            if reprobe:  # its earlier times are stale: the machine may have changed since
                self.times[count].clear()
            self.times[count].append(seconds)
            if probing:
                self.since_probe = 0
            elif reprobe:  # back off unless it won
                won = self.best() == count
                self.wait = self.reprobe_every if won else min(2 * self.wait, self.max_reprobe_every)
                self.since_probe = 0
            else:
                self.since_probe += 1
        self.last_run[count] = self.epochs
        self.used[count] += 1
        self.epochs += 1


@contextlib.contextmanager
def tuned_epoch(tuner: ThreadTuner | None) -> Iterator[None]:
    """Run the block (one epoch) at the tuner's next thread count and book its wall time to that
    count; without a tuner, run it as it is."""
    if tuner is None:
        yield
        return
    count = tuner.next_count()
    started = time.perf_counter()
    with intra_op_threads(count):
        yield
    tuner.record(count, time.perf_counter() - started)
