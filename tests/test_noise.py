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


@pytest.mark.parametrize("kind", [k for k in NOISE_KINDS if k != "human"])
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
        ("instance", 0.55, 10, r"rate <= 0\.5"),
        ("symmetric", 0.2, 10, "uniform, uniform_any, class_dependent, instance, human, open_set"),
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


# --- instance-dependent noise (Xia et al. 2020) -----------------------------------------------


def _features(labels: torch.Tensor, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """Features that depend on the class (a class mean) and on the sample (noise)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(int(labels.max()) + 1, dim, generator=gen)
    return means[labels] + torch.randn(len(labels), dim, generator=gen)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.5])
def test_instance_realised_rate_within_tolerance(rate):
    clean = balanced_labels(20_000, 10)
    out = corrupt_labels(clean, 10, "instance", rate, seed=3, features=_features(clean))
    assert abs(out.rate - rate) < 0.01  # 20k draws: sd of the share about 0.004
    assert torch.allclose(out.class_rates, 1 - out.transition.diagonal())
    assert float((out.class_rates - rate).abs().max()) < 0.04
    assert torch.equal(out.is_noisy, out.labels != clean)


def test_instance_flips_depend_on_the_features_not_only_the_class():
    clean = balanced_labels(20_000, 10)
    x = _features(clean)
    out = corrupt_labels(clean, 10, "instance", 0.4, seed=3, features=x)
    # flips of one class go unevenly to the other classes (uniform noise would give 0.4 / 9 each)
    off = out.transition[0, 1:]
    assert float(off.max()) > 2 * 0.4 / 9
    # the same labels with other features flip other samples to other classes
    other = corrupt_labels(clean, 10, "instance", 0.4, seed=3, features=x.flip(1))
    assert float((other.labels != out.labels).double().mean()) > 0.2


def test_instance_same_seed_same_labels():
    clean = balanced_labels(5_000, 10)
    x = _features(clean)
    a = corrupt_labels(clean, 10, "instance", 0.3, seed=7, features=x)
    b = corrupt_labels(clean.tolist(), 10, "instance", 0.3, seed=7, features=x.clone())
    c = corrupt_labels(clean, 10, "instance", 0.3, seed=8, features=x)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)


def test_instance_needs_features():
    with pytest.raises(ValueError, match="features="):
        corrupt_labels(balanced_labels(100, 10), 10, "instance", 0.3, seed=0)


# --- human labels and their synthetic twin ---------------------------------------------------


def test_human_labels_are_taken_as_given():
    clean = balanced_labels(1000, 10)
    human = clean.clone()
    human[:300] = (human[:300] + 3) % 10
    out = corrupt_labels(clean, 10, "human", 0.0, seed=0, human_labels=human)
    assert torch.equal(out.labels, human) and out.rate == pytest.approx(0.3)
    assert torch.equal(out.transition, realised_transition(clean, human, 10))
    with pytest.raises(ValueError, match="human_labels="):
        corrupt_labels(clean, 10, "human", 0.0, seed=0)
    with pytest.raises(ValueError, match=r"human labels must be in \[0, 10\)"):
        corrupt_labels(clean, 10, "human", 0.0, seed=0, human_labels=torch.full((1000,), 10))


def test_synthetic_twin_has_the_same_matrix_but_other_samples():
    from gce_core.noise import noise_from_transition

    clean = balanced_labels(100_000, 10)
    gen = torch.Generator().manual_seed(0)
    human = torch.where(torch.rand(len(clean), generator=gen) < 0.3, (clean * 7 + 1) % 10, clean)
    human[clean == 4] = 2  # a class people always get wrong
    t = realised_transition(clean, human, 10)
    twin = noise_from_transition(clean, t, seed=1)
    assert float((twin.transition - t).abs().max()) < 0.01
    assert abs(twin.rate - float((human != clean).double().mean())) < 0.005
    assert torch.equal(twin.labels[clean == 4], torch.full((10_000,), 2))
    noisy_both = (twin.labels != clean) & (human != clean) & (clean != 4)
    assert float(noisy_both.double().sum()) / float((human != clean).double().sum()) < 0.5
    again = noise_from_transition(clean, t, seed=1)
    assert torch.equal(again.labels, twin.labels)
    with pytest.raises(ValueError, match="rows summing to 1"):
        noise_from_transition(clean, t * 2, seed=1)


# --- through the spec: a run's data ----------------------------------------------------------


@pytest.fixture
def cifar_n(tmp_path, monkeypatch):
    """A tiny CIFAR-10 and its CIFAR-N label file in the real formats, in tmp_path."""
    from torchvision import datasets as tv_datasets

    from gce_core.data import load_raw
    from tests.fake_datasets import patch_cifar_md5, write_cifar10, write_cifar_n

    load_raw.cache_clear()
    fake = write_cifar10(tmp_path, per_batch=40, n_test=10)
    patch_cifar_md5(monkeypatch, tv_datasets.CIFAR10, fake)
    table = write_cifar_n(tmp_path, fake.y_train, rates=(0.1, 0.2, 0.2, 0.2, 0.5))
    yield tmp_path, fake, table
    load_raw.cache_clear()


def test_human_noise_spec_defaults_and_refusals(cifar_n):
    from gce_core.spec import SpecError, parse_spec

    root = str(cifar_n[0])
    spec = parse_spec(dict(dataset="cifar10", data_root=root, noise="human"))
    assert spec.human_labels == "worse_label" and not spec.human_twin
    assert spec.label().endswith("human worse_label | seed 0")
    with pytest.raises(SpecError, match=r"^human_labels: unknown label set 'noisy_label' for cifar10; allowed: worse_label"):
        parse_spec(dict(dataset="cifar10", data_root=root, noise="human", human_labels="noisy_label"))
    with pytest.raises(SpecError, match=r"^noise: human noise needs people's labels.*digits has none"):
        parse_spec(dict(dataset="digits", noise="human"))
    with pytest.raises(SpecError, match=r"^human_labels: human_labels and human_twin belong to human noise"):
        parse_spec(dict(dataset="digits", noise="uniform", noise_rate=0.2, human_twin=True))


def test_human_noise_trains_on_the_files_labels_and_the_twin_on_its_matrix(cifar_n):
    from gce_core.experiment_data import build_experiment_data, noise_preview, noisy_training_set
    from gce_core.spec import parse_spec

    root, fake, table = cifar_n
    base = dict(dataset="cifar10", data_root=str(root), noise="human", human_labels="worse_label", val_fraction=0.25)
    t = noisy_training_set(parse_spec(base))
    assert t.noisy.labels.tolist() == table["worse_label"].tolist()
    data = build_experiment_data(parse_spec(base))
    assert torch.equal(data.y_train, t.noisy.labels[t.train_idx])
    assert torch.equal(data.y_train_clean, torch.as_tensor(fake.y_train)[t.train_idx])
    assert data.realised_rate == pytest.approx(float((table["worse_label"] != fake.y_train).mean()))
    preview = noise_preview(base)
    assert torch.equal(preview.transition, t.noisy.transition) and preview.rate == pytest.approx(data.realised_rate)
    twin = noisy_training_set(parse_spec(dict(base, human_twin=True, seed=1)))
    assert not torch.equal(twin.noisy.labels, t.noisy.labels)
    # the twin draws from the human matrix: here every flip goes to the next class, as the file's
    flipped = twin.noisy.is_noisy
    assert torch.equal(twin.noisy.labels[flipped], (torch.as_tensor(fake.y_train)[flipped] + 1) % 10)


def test_users_npz_noisy_labels_are_its_human_noise(tmp_path):
    from gce_core.data import load_raw
    from gce_core.experiment_data import noisy_training_set
    from gce_core.spec import parse_spec
    from tests.fake_datasets import write_user_npz

    load_raw.cache_clear()
    arrays = write_user_npz(tmp_path, "mine", noisy=True)
    spec = parse_spec(dict(dataset="mine", data_root=str(tmp_path), noise="human"))
    assert spec.human_labels == "y_train_noisy"
    assert noisy_training_set(spec).noisy.labels.tolist() == arrays["y_train_noisy"].tolist()


def test_instance_noise_of_a_run_is_seeded_and_at_the_rate():
    from gce_core.experiment_data import noise_preview, noisy_training_set
    from gce_core.spec import parse_spec

    spec = parse_spec(dict(dataset="mnist5k", noise="instance", noise_rate=0.4, seed=2))
    a, b = noisy_training_set(spec), noisy_training_set(spec)
    assert torch.equal(a.noisy.labels, b.noisy.labels)
    assert abs(a.noisy.rate - 0.4) < 0.03  # 4,000 images
    assert noise_preview(spec).rate == a.noisy.rate
    other = noisy_training_set(parse_spec(dict(dataset="mnist5k", noise="instance", noise_rate=0.4, seed=3)))
    assert not torch.equal(a.noisy.labels, other.noisy.labels)


def test_gallery_samples_are_the_runs_flipped_samples_in_row_order():
    from gce_core.experiment_data import GALLERY_SIZE, build_experiment_data, gallery_samples
    from gce_core.spec import parse_spec

    spec = parse_spec(dict(dataset="digits", noise="uniform", noise_rate=0.4, seed=5))
    data = build_experiment_data(spec)
    g = gallery_samples(spec)
    assert len(g.index) == GALLERY_SIZE and torch.equal(g.index, data.gallery_idx)
    assert bool(data.is_noisy[g.index].all()) and bool((g.given != g.true).all())
    assert torch.equal(g.given, data.y_train[g.index]) and torch.equal(g.true, data.y_train_clean[g.index])
    mean = g.images.mean() - (data.x_train[g.index]).mean()  # x_train is mean-subtracted
    assert g.images.min() >= 0 and g.images.max() <= 1 and float(mean) > 0


def test_epoch_rows_record_the_gallerys_f_y_and_predictions():
    from gce_core.experiment_data import GALLERY_SIZE
    from gce_core.spec import parse_spec
    from gce_core.train import train

    rows = []
    spec = parse_spec(dict(dataset="digits", noise="uniform", noise_rate=0.6, epochs=3, lr=0.1, seed=1,
                           loss="truncated_lq", prune_start=2, prune_every=1))
    train(spec, on_epoch=rows.append)
    for row in rows:
        assert len(row["fy_gallery"]) == len(row["pred_gallery"]) == GALLERY_SIZE
        assert all(0.0 <= f <= 1.0 for f in row["fy_gallery"]) and all(0 <= p < 10 for p in row["pred_gallery"])
    assert rows[0]["kept_gallery"] == [True] * GALLERY_SIZE
    assert rows[2]["fy_gallery"] != rows[0]["fy_gallery"]
    clean = train(parse_spec(dict(dataset="digits", epochs=1)), on_epoch=rows.append)
    assert clean["epochs_completed"] == 1 and rows[-1]["fy_gallery"] == [] and rows[-1]["kept_gallery"] is None
