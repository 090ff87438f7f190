import numpy as np
import pytest

from metabo_tune.type_groups import TypeGroups, density_clusters, group_types, standardise

RNG = np.random.default_rng(0)
TYPE_CENTRES = np.array([[-1.0, 0.0], [1.0, 0.0]])


def residual_fit(types: np.ndarray, noise: float = 0.01, best: np.ndarray | None = None):
    """A cross fit whose truth is one function per type, read by the head from the first embedding coordinate
    only: metabolite i's residual is fitted by an embedding in proportion to its squared distance from `best`[i]
    along that coordinate (default: i's type centre), times a misfit of i's own (the reactions' error)."""
    own = 1.0 + noise * RNG.random(len(types))
    best = TYPE_CENTRES[types, 0] if best is None else best

    def cross_fit(centres: np.ndarray) -> np.ndarray:
        return own[:, None] * (1.0 + (best[:, None] - centres[None, :, 0]) ** 2)
    return cross_fit


def blobs(types: np.ndarray, spread: float = 0.05) -> np.ndarray:
    return TYPE_CENTRES[types] + spread * RNG.standard_normal((len(types), 2))


def test_every_metabolite_joins_the_group_that_fits_its_residual_even_nearer_the_other_cloud():
    types = np.repeat([0, 1], 30)
    embeddings = blobs(types)
    embeddings[:3] = [0.6, 0.0]  # three of type 0 sit nearer type 1's cloud, off both clusters
    groups = group_types(embeddings, residual_fit(types), "auto", merge_tolerance=0.25)
    assert groups.sizes == [30, 30]
    assert len(set(zip(groups.labels, types, strict=True))) == 2  # one group per type, each type whole
    assert groups.seed_groups == 2
    np.testing.assert_allclose(groups.centres[groups.labels[[0, -1]]], TYPE_CENTRES, atol=0.05)


def test_auto_merges_one_type_split_into_two_clusters_and_keeps_two_types_apart():
    types = np.repeat([0, 1], 30)
    embeddings = blobs(types)
    embeddings[:15] += [0.0, 3.0]  # type 0 in two clouds along the coordinate the head does not read
    cross_fit = residual_fit(types)
    groups = group_types(embeddings, cross_fit, "auto", merge_tolerance=0.25)
    assert groups.seed_groups == 3
    assert sorted(groups.sizes) == [30, 30]
    assert len(set(zip(groups.labels, types, strict=True))) == 2  # one group per type


def test_a_tight_tolerance_keeps_the_split_and_a_given_number_is_not_merged():
    types = np.repeat([0, 1], 30)
    embeddings = blobs(types)
    embeddings[:15] += [-0.2, 3.0]  # two halves of type 0 whose functions differ a little: 4 % worse fits
    cross_fit = residual_fit(types, best=embeddings[:, 0])
    assert len(group_types(embeddings, cross_fit, "auto", merge_tolerance=1e-6).centres) == 3
    kept = group_types(embeddings, cross_fit, 3, merge_tolerance=0.25)
    assert kept.seed_groups == 3 and len(kept.centres) == 3
    two = group_types(blobs(types), cross_fit, 2, merge_tolerance=0.25)
    assert len(set(zip(two.labels, types, strict=True))) == 2


def test_one_cloud_or_no_cluster_is_one_group():
    types = np.zeros(40, dtype=int)
    groups = group_types(blobs(types), residual_fit(types), "auto", merge_tolerance=0.25)
    assert groups.sizes == [40]
    scattered = RNG.uniform(-10, 10, (4, 2))  # fewer points than a cluster needs
    assert (density_clusters(scattered) == -1).all()
    lone = group_types(scattered, residual_fit(np.zeros(4, dtype=int)), "auto", merge_tolerance=0.25)
    assert lone.sizes == [4] and lone.seed_groups == 1


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_standardise_keeps_the_shape_at_any_scale(scale):
    embeddings = blobs(np.repeat([0, 1], 10)) * scale
    scaled = standardise(embeddings)
    np.testing.assert_allclose(scaled.mean(0), 0, atol=1e-12)
    assert np.sqrt(np.mean(scaled**2)) == pytest.approx(1.0)
    np.testing.assert_allclose(scaled, standardise(embeddings / scale), atol=1e-9)


def test_a_split_off_group_gets_a_centre_of_its_own_and_the_others_keep_theirs():
    groups = TypeGroups(np.array([0, 0, 1, 1]), np.array([[0.0, 0.0], [0.3, 0.4]]), 2)
    same = groups.regrouped(np.array([1, 0, 1, 1]))
    np.testing.assert_array_equal(same.centres, groups.centres)
    split = groups.regrouped(np.array([0, 2, 1, 1]))
    assert split.labels.tolist() == [0, 2, 1, 1] and len(split.centres) == 3
    np.testing.assert_array_equal(split.centres[:2], groups.centres)
    assert min(np.linalg.norm(split.centres[2] - c) for c in groups.centres) >= 1.0
    alone = TypeGroups(np.zeros(3, dtype=np.int64), np.array([[0.2, -0.1]]), 1).regrouped(np.array([0, 1, 1]))
    assert np.linalg.norm(alone.centres[1] - alone.centres[0]) == pytest.approx(1.0)
