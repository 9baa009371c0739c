"""Tests for gce_core.noise: realised rates, class maps, clean-label selection, seeds, open set."""

from __future__ import annotations

import math

import pytest
import torch

from gce_core.noise import (
    CIFAR100_COARSE,
    CLASS_MAP_NAMES,
    NOISE_KINDS,
    check_noise,
    class_map,
    corrupt_labels,
    default_class_map,
    expected_transition,
    realised_transition,
    replace_open_set,
)

N = 100_000


def balanced_labels(n: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    """(n,) int64 labels, each class equally often, in a shuffled order."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]


# --- CIFAR-100 super-classes -------------------------------------------------------------------


def test_cifar100_coarse_has_20_superclasses_of_5():
    assert len(CIFAR100_COARSE) == 100
    counts = torch.bincount(torch.tensor(CIFAR100_COARSE), minlength=20)
    assert counts.tolist() == [5] * 20


# The 20 CIFAR-100 super-classes in coarse-index order, by fine-class name (dataset description).
SUPERCLASSES = (
    ("beaver", "dolphin", "otter", "seal", "whale"),  # 0 aquatic mammals
    ("aquarium_fish", "flatfish", "ray", "shark", "trout"),  # 1 fish
    ("orchid", "poppy", "rose", "sunflower", "tulip"),  # 2 flowers
    ("bottle", "bowl", "can", "cup", "plate"),  # 3 food containers
    ("apple", "mushroom", "orange", "pear", "sweet_pepper"),  # 4 fruit and vegetables
    ("clock", "keyboard", "lamp", "telephone", "television"),  # 5 household electrical devices
    ("bed", "chair", "couch", "table", "wardrobe"),  # 6 household furniture
    ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),  # 7 insects
    ("bear", "leopard", "lion", "tiger", "wolf"),  # 8 large carnivores
    ("bridge", "castle", "house", "road", "skyscraper"),  # 9 large man-made outdoor things
    ("cloud", "forest", "mountain", "plain", "sea"),  # 10 large natural outdoor scenes
    ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),  # 11 large omnivores/herbivores
    ("fox", "porcupine", "possum", "raccoon", "skunk"),  # 12 medium-sized mammals
    ("crab", "lobster", "snail", "spider", "worm"),  # 13 non-insect invertebrates
    ("baby", "boy", "girl", "man", "woman"),  # 14 people
    ("crocodile", "dinosaur", "lizard", "snake", "turtle"),  # 15 reptiles
    ("hamster", "mouse", "rabbit", "shrew", "squirrel"),  # 16 small mammals
    ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),  # 17 trees
    ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),  # 18 vehicles 1
    ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),  # 19 vehicles 2
)


def test_cifar100_coarse_matches_superclass_names():
    # CIFAR-100 fine labels are numbered in alphabetical order of their names.
    fine_names = sorted(name for group in SUPERCLASSES for name in group)
    assert len(set(fine_names)) == 100
    assert fine_names[0] == "apple" and fine_names[1] == "aquarium_fish"
    want = [next(k for k, g in enumerate(SUPERCLASSES) if name in g) for name in fine_names]
    assert list(CIFAR100_COARSE) == want
    assert CIFAR100_COARSE[0] == 4 and CIFAR100_COARSE[1] == 1


# --- class maps --------------------------------------------------------------------------------


def test_fixed_class_maps_are_exact():
    assert class_map("cifar10", 10) == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    assert class_map("fashion_mnist", 10) == {9: 7, 7: 5, 2: 6, 4: 3, 3: 4}
    assert class_map("next_class", 7) == {i: (i + 1) % 7 for i in range(7)}


def test_cifar100_blocks_map():
    m = class_map("cifar100_blocks", 100)
    assert m == {i: (i // 5) * 5 + (i + 1) % 5 for i in range(100)}
    assert (m[0], m[3], m[4], m[99]) == (1, 4, 0, 95)


def test_cifar100_superclass_map_is_a_5_cycle_inside_each_superclass():
    m = class_map("cifar100_superclass", 100)
    assert sorted(m) == list(range(100))
    assert sorted(m.values()) == list(range(100))  # a permutation
    for src, dst in m.items():
        assert src != dst
        assert CIFAR100_COARSE[src] == CIFAR100_COARSE[dst], (src, dst)
    for coarse in range(20):
        group = sorted(i for i, k in enumerate(CIFAR100_COARSE) if k == coarse)
        cycle, node = [], group[0]
        for _ in range(5):
            cycle.append(node)
            node = m[node]
        assert node == group[0] and cycle == group  # next index, circularly, length 5
    # apple -> mushroom, sweet_pepper -> apple
    assert m[0] == 51 and m[83] == 0
    assert m != class_map("cifar100_blocks", 100)


def test_class_map_refuses_unknown_name_and_wrong_class_count():
    with pytest.raises(ValueError, match="cifar100_superclass"):
        class_map("cifar1000", 100)
    with pytest.raises(ValueError, match="10 classes"):
        class_map("cifar10", 100)
    with pytest.raises(ValueError, match="100 classes"):
        class_map("cifar100_superclass", 10)
    assert CLASS_MAP_NAMES == (
        "cifar10", "cifar100_blocks", "cifar100_superclass", "fashion_mnist", "next_class",
    )  # fmt: skip


def test_default_class_map():
    assert default_class_map("cifar10") == "cifar10"
    assert default_class_map("cifar100") == "cifar100_blocks"
    assert default_class_map("fashion_mnist") == "fashion_mnist"
    assert default_class_map("mnist") == "next_class"
    assert default_class_map(None) == "next_class"


# --- uniform noise -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6, 0.8])
def test_uniform_realised_rate_and_never_own_class(num_classes, rate):
    clean = balanced_labels(N, num_classes)
    out = corrupt_labels(clean, num_classes, "uniform", rate, seed=1)
    assert abs(out.rate - rate) < 0.01
    assert torch.equal(out.is_noisy, out.labels != clean)
    # A selected sample always changes class: the realised flip rate equals the selection rate.
    assert abs(float(out.transition.diagonal().mean()) - (1 - rate)) < 0.01
    assert out.labels.dtype == torch.int64 and out.labels.shape == (N,)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_uniform_any_realised_rate_is_rate_times_c_minus_1_over_c(num_classes):
    rate = 0.6
    clean = balanced_labels(N, num_classes)
    out = corrupt_labels(clean, num_classes, "uniform_any", rate, seed=2)
    assert abs(out.rate - rate * (num_classes - 1) / num_classes) < 0.01
    assert torch.equal(out.is_noisy, out.labels != clean)


def test_uniform_flips_spread_evenly_over_the_other_classes():
    c, rate = 10, 0.4
    clean = balanced_labels(N, c)
    out = corrupt_labels(clean, c, "uniform", rate, seed=3)
    counts = torch.zeros(c, c, dtype=torch.float64)
    counts.index_put_((clean, out.labels), torch.ones(N, dtype=torch.float64), accumulate=True)
    off = counts * (1 - torch.eye(c, dtype=torch.float64))
    assert float(counts.diagonal().sum()) == N - int(out.is_noisy.sum())
    expected = off.sum(dim=1, keepdim=True) / (c - 1)
    chi2 = float((((off - expected) ** 2 / expected) * (1 - torch.eye(c))).sum())
    dof = c * (c - 2)
    assert chi2 < dof + 5 * math.sqrt(2 * dof), chi2  # ~5 sigma above the chi-square mean
    assert float((off / expected).masked_select(~torch.eye(c, dtype=torch.bool)).min()) > 0.8


def test_uniform_flips_spread_evenly_with_100_classes():
    c, rate = 100, 0.6
    clean = balanced_labels(N, c)
    out = corrupt_labels(clean, c, "uniform", rate, seed=4)
    flipped = out.is_noisy
    offsets = (out.labels[flipped] - clean[flipped]) % c  # 1..c-1, uniform if spread evenly
    hist = torch.bincount(offsets, minlength=c).double()
    assert hist[0] == 0
    expected = flipped.sum().double() / (c - 1)
    chi2 = float(((hist[1:] - expected) ** 2 / expected).sum())
    dof = c - 2
    assert chi2 < dof + 5 * math.sqrt(2 * dof), chi2


# --- class-dependent noise ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "map_name", "c"),
    [
        ("cifar10", None, 10),
        ("fashion_mnist", None, 10),
        ("cifar100", None, 100),
        ("cifar100", "cifar100_superclass", 100),
        ("mnist", None, 10),
    ],
)
def test_class_dependent_flips_only_listed_classes_to_their_target(dataset, map_name, c):
    rate = 0.3
    clean = balanced_labels(N, c)
    out = corrupt_labels(clean, c, "class_dependent", rate, 5, dataset, class_map_name=map_name)
    m = class_map(map_name or default_class_map(dataset), c)
    target = torch.tensor([m.get(i, i) for i in range(c)])
    flipped = out.is_noisy
    assert torch.equal(out.labels[flipped], target[clean[flipped]])
    per_class_flip = 1 - out.transition.diagonal()
    for k in range(c):
        if k in m:
            assert abs(float(per_class_flip[k]) - rate) < 0.05, (k, float(per_class_flip[k]))
        else:
            assert float(per_class_flip[k]) == 0.0
    assert abs(out.rate - rate * len(m) / c) < 0.01


def test_class_dependent_cifar10_per_class_rate_is_tight():
    rate = 0.4
    clean = balanced_labels(N, 10)
    out = corrupt_labels(clean, 10, "class_dependent", rate, seed=6, dataset="cifar10")
    for src, dst in {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}.items():
        assert abs(float(out.transition[src, dst]) - rate) < 0.02
    assert abs(out.rate - rate / 2) < 0.01  # only 5 of 10 classes are corrupted


def test_cat_dog_pair_is_never_reflipped():
    rate, cat, dog = 0.4, 3, 5
    gen = torch.Generator().manual_seed(7)
    clean = torch.where(torch.rand(N, generator=gen) < 0.5, cat, dog)
    out = corrupt_labels(clean, 10, "class_dependent", rate, seed=8, dataset="cifar10")
    cats, dogs = clean == cat, clean == dog
    kept_cat = float((out.labels[cats] == cat).double().mean())
    kept_dog = float((out.labels[dogs] == dog).double().mean())
    # A sequential cat->dog then dog->cat pass would keep 1 - rate + rate**2 = 0.76 of the cats.
    assert abs(kept_cat - (1 - rate)) < 0.01
    assert abs(kept_dog - (1 - rate)) < 0.01
    flipped = out.is_noisy
    assert torch.equal(out.labels[flipped], torch.where(clean[flipped] == cat, dog, cat))
    assert set(out.labels.unique().tolist()) == {cat, dog}


# --- transitions, seeds, validation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "rate", "map_name"),
    [
        ("none", 0.0, None),
        ("uniform", 0.4, None),
        ("uniform", 0.8, None),
        ("uniform_any", 0.6, None),
        ("class_dependent", 0.3, "cifar10"),
        ("class_dependent", 0.4, "fashion_mnist"),
        ("open_set", 0.4, None),
    ],
)
def test_realised_transition_matches_expected(kind, rate, map_name):
    c = 10
    # 400 000 labels: per-entry std <= 0.0025, so 0.01 is a 4-sigma tolerance.
    clean = balanced_labels(4 * N, c)
    out = corrupt_labels(clean, c, kind, rate, seed=9, class_map_name=map_name)
    want = expected_transition(kind, rate, c, map_name)
    assert out.transition.dtype == torch.float64 and out.transition.shape == (c, c)
    assert torch.allclose(out.transition.sum(dim=1), torch.ones(c, dtype=torch.float64))
    assert torch.allclose(want.sum(dim=1), torch.ones(c, dtype=torch.float64))
    assert float((out.transition - want).abs().max()) < 0.01


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("c", [2, 10, 100])
def test_expected_transition_rows_sum_to_one(kind, c):
    rate = 0.0 if kind == "none" else 0.3
    name = "cifar100_superclass" if c == 100 else "next_class"
    t = expected_transition(kind, rate, c, name)
    assert t.dtype == torch.float64 and t.shape == (c, c)
    assert torch.allclose(t.sum(dim=1), torch.ones(c, dtype=torch.float64))
    assert bool((t >= 0).all())


def test_expected_transition_values():
    u = expected_transition("uniform", 0.2, 5)
    assert torch.allclose(u.diagonal(), torch.full((5,), 0.8, dtype=torch.float64))
    assert math.isclose(float(u[0, 1]), 0.05)
    a = expected_transition("uniform_any", 0.5, 5)
    assert math.isclose(float(a[0, 0]), 0.6) and math.isclose(float(a[0, 1]), 0.1)
    cd = expected_transition("class_dependent", 0.3, 10, "cifar10")
    assert math.isclose(float(cd[3, 5]), 0.3) and math.isclose(float(cd[3, 3]), 0.7)
    assert float(cd[0, 0]) == 1.0 and float(cd[0].sum()) == 1.0
    assert torch.equal(expected_transition("open_set", 0.5, 10), torch.eye(10, dtype=torch.float64))


def test_realised_transition_empty_class_gets_identity_row():
    t = realised_transition(torch.tensor([0, 0, 1, 1]), torch.tensor([1, 0, 1, 1]), 3)
    assert t.tolist() == [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


@pytest.mark.parametrize("kind", ["uniform", "uniform_any", "class_dependent"])
def test_same_seed_same_labels_different_seed_differs(kind):
    clean = balanced_labels(10_000, 10)
    a = corrupt_labels(clean, 10, kind, 0.3, seed=11, dataset="cifar10")
    b = corrupt_labels(clean.tolist(), 10, kind, 0.3, seed=11, dataset="cifar10")
    c = corrupt_labels(clean, 10, kind, 0.3, seed=12, dataset="cifar10")
    assert torch.equal(a.labels, b.labels) and torch.equal(a.transition, b.transition)
    assert not torch.equal(a.labels, c.labels)


def test_corrupt_labels_does_not_touch_global_rng_or_input():
    clean = balanced_labels(1000, 10)
    before = clean.clone()
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    corrupt_labels(clean, 10, "uniform", 0.5, seed=1)
    assert torch.equal(torch.rand(3), expected_next)
    assert torch.equal(clean, before)


def test_none_and_open_set_leave_labels_unchanged():
    clean = balanced_labels(1000, 10)
    for kind, rate in [("none", 0.0), ("none", 0.7), ("open_set", 0.5)]:
        out = corrupt_labels(clean, 10, kind, rate, seed=1)
        assert torch.equal(out.labels, clean)
        assert not bool(out.is_noisy.any()) and out.rate == 0.0
        assert torch.equal(out.transition, torch.eye(10, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kind", "rate", "c", "message"),
    [
        ("uniform", 0.9, 10, r"1 - 1/c = 0\.9"),
        ("uniform", 0.99, 100, r"1 - 1/c = 0\.99"),
        ("uniform", 0.5, 2, r"1 - 1/c = 0\.5"),
        ("class_dependent", 0.5, 10, r"rate < 0\.5"),
        ("uniform", -0.1, 10, r"\[0, 1\)"),
        ("uniform_any", 1.0, 10, r"\[0, 1\)"),
        ("open_set", 1.0, 10, r"\[0, 1\)"),
        ("uniform", float("nan"), 10, r"\[0, 1\)"),
        ("symmetric", 0.2, 10, "uniform, uniform_any, class_dependent, open_set"),
    ],
)
def test_refused_rates_name_the_limit(kind, rate, c, message):
    with pytest.raises(ValueError, match=message):
        check_noise(kind, rate, c)
    with pytest.raises(ValueError, match=message):
        corrupt_labels(torch.zeros(10, dtype=torch.long), c, kind, rate, seed=0)


def test_accepted_rates_just_below_limits():
    check_noise("uniform", 0.89, 10)
    check_noise("uniform_any", 0.95, 10)
    check_noise("class_dependent", 0.49, 10)
    check_noise("none", 5.0, 10)  # "none" ignores the rate


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.zeros(4, 2, dtype=torch.long), "1-D"),
        (torch.tensor([0, 1, 10]), r"\[0, 10\)"),
        (torch.tensor([-1, 1]), r"\[0, 10\)"),
        (torch.tensor([0.5, 1.0]), "whole numbers"),
    ],
)
def test_bad_labels_are_refused(labels, message):
    with pytest.raises(ValueError, match=message):
        corrupt_labels(labels, 10, "uniform", 0.2, seed=0)


# --- open-set noise ----------------------------------------------------------------------------


def open_set_data(n: int = 1000, m: int = 800):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    source = -1 - torch.arange(m, dtype=torch.float32).view(m, 1, 1, 1).expand(m, 3, 4, 4)
    return images, source.contiguous()


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6])
def test_replace_open_set_replaces_exactly_round_rate_n(rate):
    images, source = open_set_data()
    before = images.clone()
    labels = balanced_labels(1000, 10)
    noisy = corrupt_labels(labels, 10, "open_set", rate, seed=13)
    new, replaced = replace_open_set(images, rate, source, seed=13)
    k = round(rate * 1000)
    assert replaced.dtype == torch.bool and int(replaced.sum()) == k
    assert torch.equal(images, before)  # input untouched
    assert torch.equal(new[~replaced], images[~replaced])
    ids = new[replaced][:, 0, 0, 0]
    assert bool((ids < 0).all())  # every replaced slot holds a source image...
    assert ids.unique().numel() == k  # ...and no source image is used twice
    assert torch.equal(noisy.labels, labels)  # replaced slots keep their label


def test_replace_open_set_is_reproducible():
    images, source = open_set_data()
    a, ra = replace_open_set(images, 0.3, source, seed=21)
    b, rb = replace_open_set(images, 0.3, source, seed=21)
    _, rc = replace_open_set(images, 0.3, source, seed=22)
    assert torch.equal(a, b) and torch.equal(ra, rb)
    assert not torch.equal(ra, rc)


def test_replace_open_set_refuses_bad_sources():
    images, source = open_set_data()
    with pytest.raises(ValueError, match=r"\(1000, 3, 4, 4\).*\(800, 3, 5, 5\)"):
        replace_open_set(images, 0.2, torch.zeros(800, 3, 5, 5), seed=0)
    with pytest.raises(ValueError, match="needs 500 source images, only 100"):
        replace_open_set(images, 0.5, source[:100], seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        replace_open_set(images, 1.0, source, seed=0)
