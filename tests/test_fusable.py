"""The torch-free rule of which runs share a process: fusion agrees with the fused trainer's own
check; compile runs go in turn; it loads no torch."""

import subprocess
import sys
from pathlib import Path

import pytest

from gce_core import fused
from gce_core.fusable import (
    FUSABLE_DIFFERENCES,
    FUSABLE_MODELS,
    fusion_key,
    in_turn_key,
    process_key,
)
from gce_core.fused import can_fuse
from gce_core.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(dataset="digits", model="mlp", train_subset=200, epochs=3, lr=0.1, noise="uniform",
            noise_rate=0.4, lr_milestones=[1, 2])  # fmt: skip


@pytest.mark.parametrize("other, fusable", [
    (dict(BASE, loss="cce"), True),
    (dict(BASE, loss="lq", q=0.3, seed=5), True),
    (dict(BASE, loss="truncated_lq", k=0.4, prune_start=2, noise="class_dependent", name="x"), True),
    (dict(BASE, lr=0.05), False),
    (dict(BASE, lr_milestones=[1]), False),
    (dict(BASE, dataset="fashion_mnist"), False),
    (dict(BASE, epochs=4), False),
    (dict(BASE, model="cnn"), False),
])  # fmt: skip
def test_equal_keys_exactly_when_can_fuse_says_yes(other, fusable):
    a, b = parse_spec(BASE), parse_spec(other)
    assert can_fuse([a, b])[0] is fusable
    key_a, key_b = fusion_key(a), fusion_key(b)
    assert key_a is not None
    assert (key_b is not None and key_a == key_b) is fusable
    hash(key_a)  # usable as a dict key


def test_models_with_batch_norm_and_compile_have_no_key():
    assert fusion_key(parse_spec(dict(BASE, model="cnn"))) is None
    assert fusion_key(parse_spec(dict(BASE, compile=True))) is None
    assert can_fuse([parse_spec(dict(BASE, compile=True))])[0] is False
    assert FUSABLE_MODELS == ("mlp",)


def test_the_rule_is_one_tuple_shared_with_the_trainer():
    assert fused.FUSABLE_DIFFERENCES is FUSABLE_DIFFERENCES
    key = dict(fusion_key(parse_spec(BASE)))
    assert not set(key) & set(FUSABLE_DIFFERENCES)
    assert key["lr"] == 0.1 and key["lr_milestones"] == (1, 2) and key["model"] == "mlp"


def test_the_rule_module_does_not_import_torch():
    code = "import sys, gce_core.fusable; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_compile_runs_share_a_process_in_turn_when_only_fusable_fields_differ():
    cnn = dict(BASE, model="cnn", compile=True)
    a = parse_spec(cnn)
    b = parse_spec(dict(cnn, loss="lq", q=0.3, seed=4, noise="class_dependent", name="b"))
    assert in_turn_key(a) is not None and in_turn_key(a) == in_turn_key(b)
    assert process_key(a) == process_key(b) == ("in turn", in_turn_key(a))
    assert in_turn_key(parse_spec(dict(cnn, lr=0.05))) != in_turn_key(a)
    assert in_turn_key(parse_spec(dict(cnn, model="resnet18"))) != in_turn_key(a)
    assert in_turn_key(parse_spec(dict(BASE, model="cnn"))) is None  # not compiled: a process of its own
    assert process_key(parse_spec(dict(BASE, model="cnn"))) is None
    mlp = parse_spec(BASE)  # fusable: fused, never in turn
    assert process_key(mlp) == ("fused", fusion_key(mlp)) and in_turn_key(mlp) is None
    assert process_key(parse_spec(dict(BASE, compile=True)))[0] == "in turn"
