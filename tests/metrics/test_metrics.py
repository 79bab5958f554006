import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from modeling_spa.metrics import average_precision, compute_omap, level_scales, nearest_positive_distance

# A path graph over 4 classes: 0 - 1 - 2 - 3.
PATH4 = np.array([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]])


# Random cases hold clips without labels; the warning itself is tested below.
pytestmark = pytest.mark.filterwarnings("ignore:.*clips have no positive label")


def random_case(seed, clips=300, classes=15, decimals=2):
    rng = np.random.default_rng(seed)
    y = (rng.random((clips, classes)) < 0.12).astype(int)
    y[:, 0] = 0
    y[:5, 0] = 1  # a rare class
    scores = np.round(rng.random((clips, classes)) + 0.4 * y, decimals)  # rounding makes ties
    points = rng.integers(0, 6, size=(classes, 2))
    distances = np.abs(points[:, None] - points[None]).sum(-1)
    distances[distances == 0] = 1
    np.fill_diagonal(distances, 0)
    return y, scores, distances


@pytest.mark.parametrize("seed", range(4))
def test_plain_ap_equals_sklearn_per_class(seed):
    y, scores, distances = random_case(seed, decimals=1 + seed)
    result = compute_omap(y, scores, distances)
    expected = average_precision_score(y, scores, average=None)
    np.testing.assert_allclose(result["ap_per_class"], expected, rtol=0, atol=1e-12)
    assert result["map"] == pytest.approx(expected.mean(), abs=1e-12)


def test_unit_weights_reduce_to_sklearn():
    # With every distance 1 and lambda = 0, m_0 = 1: every false positive weighs exactly 1.
    y, scores, _ = random_case(7)
    ones = np.ones((15, 15), dtype=int) - np.eye(15, dtype=int)
    result = compute_omap(y, scores, ones)
    np.testing.assert_allclose(
        result["omap_ap_per_class"][0], average_precision_score(y, scores, average=None), atol=1e-12
    )


def test_top_level_is_one_and_omap_averages_every_level():
    y, scores, distances = random_case(1)
    result = compute_omap(y, scores, distances)
    levels = distances.max() + 1
    assert len(result["omap_per_lambda"]) == levels and result["omap_ap_per_class"].shape == (levels, 15)
    assert result["omap_per_lambda"][-1] == 1.0
    assert result["omap"] == pytest.approx(np.mean(result["omap_per_lambda"]), abs=1e-15)


def test_invariant_to_clip_order():
    y, scores, distances = random_case(2)
    perm = np.random.default_rng(0).permutation(len(y))
    a, b = compute_omap(y, scores, distances), compute_omap(y[perm], scores[perm], distances)
    np.testing.assert_allclose(a["omap_ap_per_class"], b["omap_ap_per_class"], atol=1e-13)
    assert a["map"] == pytest.approx(b["map"], abs=1e-13)


def test_three_class_example_by_hand():
    # Class 1 has one false positive above its positive, at distance 1 from clip 0's label (class 0).
    # m_0 = mean off-diagonal of D = 2, so at lambda = 0 it weighs 1/2: AP = 1 / 1.5; above, it weighs 0.
    distances = [[0, 1, 3], [1, 0, 2], [3, 2, 0]]
    predictions = [[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.1, 0.3, 0.9], [0.8, 0.1, 0.2]]
    references = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]
    result = compute_omap(references, predictions, distances)
    assert result["map"] == pytest.approx(2.5 / 3, abs=1e-15)
    np.testing.assert_allclose(result["omap_per_lambda"], [(2 + 2 / 3) / 3, 1, 1, 1], atol=1e-15)
    assert result["omap"] == pytest.approx(35 / 36, abs=1e-15)


@pytest.mark.filterwarnings("ignore:.*no positive clip")
def test_weighted_false_positives_with_a_tie_by_hand():
    # Class 0's only positive (clip 0, score 0.5) ties with a negative (clip 2, nearest label class 1: d=1)
    # and ranks below a negative whose nearest label is class 3 (clip 1: d=3). Off-diagonal distances of
    # PATH4: six 1s, four 2s, two 3s, so m_0 = 20/12, m_1 = 14/12, m_2 = 6/12, m_3: no weights.
    references = [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    predictions = [[0.5, 0, 0, 0], [0.9, 0, 0, 0], [0.5, 0, 0, 0]]
    result = compute_omap(references, predictions, PATH4)
    expected = [
        1 / (1 + (3 + 1) / (20 / 12)),  # 5/17
        1 / (1 + 3 / (14 / 12)),  # 7/25: d=1 is within lambda now
        1 / (1 + 3 / (6 / 12)),  # 1/7
        1.0,
    ]
    np.testing.assert_allclose(result["omap_ap_per_class"][:, 0], expected, atol=1e-15)
    assert result["ap_per_class"][0] == pytest.approx(1 / 3, abs=1e-15)  # tie group of three, one positive


@pytest.mark.filterwarnings("ignore:.*no positive clip")
def test_clip_without_labels_is_maximally_distant_and_warned_about():
    references = [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    predictions = [[0.5, 0.1, 0, 0], [0.9, 0.2, 0, 0], [0.1, 0.9, 0, 0]]
    with pytest.warns(UserWarning, match="1 of 3 clips have no positive label"):
        result = compute_omap(references, predictions, PATH4)
    assert result["n_clips_without_positives"] == 1
    # Class 0: the label-less clip ranks first and counts at distance Dmax = 3.
    expected = [1 / (1 + 3 / (20 / 12)), 1 / (1 + 3 / (14 / 12)), 1 / (1 + 3 / (6 / 12)), 1.0]
    np.testing.assert_allclose(result["omap_ap_per_class"][:, 0], expected, atol=1e-15)


def test_class_without_positive_is_left_out_and_counted():
    y, scores, distances = random_case(3)
    y[:, 4] = 0
    with pytest.warns(UserWarning, match="1 of 15 classes"):
        result = compute_omap(y, scores, distances)
    assert result["n_classes_evaluated"] == 14 and result["n_classes_without_positives"] == 1
    assert np.isnan(result["ap_per_class"][4]) and np.isnan(result["omap_ap_per_class"][:, 4]).all()
    keep = np.arange(15) != 4
    assert result["map"] == pytest.approx(average_precision_score(y[:, keep], scores[:, keep]), abs=1e-12)


def test_levels_beyond_every_confusion_are_perfect_and_near_confusions_are_monotone():
    # Every false positive outranking a positive is a neighbour (distance 1) of the clip's label.
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, size=200)
    y = np.eye(4, dtype=int)[labels]
    scores = y + 0.0
    neighbour = np.where(labels < 3, labels + 1, labels - 1)
    scores[np.arange(200), neighbour] = rng.random(200) * 1.5  # sometimes above a positive
    result = compute_omap(y, scores, PATH4)
    assert result["omap_per_lambda"][0] < 1
    np.testing.assert_array_equal(result["omap_per_lambda"][1:], 1.0)
    assert (np.diff(result["omap_per_lambda"]) >= 0).all()


def test_float32_float64_and_torch_inputs_agree():
    y, scores, distances = random_case(4, decimals=3)
    scores = scores.astype(np.float32)
    a = compute_omap(y, scores, distances)
    b = compute_omap(torch.from_numpy(y), torch.from_numpy(scores).double(), torch.from_numpy(distances))
    np.testing.assert_allclose(a["omap_ap_per_class"], b["omap_ap_per_class"], atol=1e-13)


def test_default_distances_are_the_audioset_labels(ontology):
    rng = np.random.default_rng(0)
    y = (rng.random((64, 527)) < 0.02).astype(int)
    y[np.arange(64), rng.integers(0, 527, 64)] = 1
    scores = rng.random((64, 527))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = compute_omap(y, scores), compute_omap(y, scores, ontology.distances)
    assert len(a["omap_per_lambda"]) == 22
    np.testing.assert_array_equal(a["omap_per_lambda"], b["omap_per_lambda"])


def test_nearest_positive_distance_and_scales():
    y = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(nearest_positive_distance(y, PATH4), [[0, 1, 1, 0], [3, 3, 3, 3], [1, 0, 1, 2]])
    np.testing.assert_allclose(level_scales(PATH4), [20 / 12, 14 / 12, 6 / 12, 1.0])


@pytest.mark.parametrize(
    ("references", "predictions", "distances", "message"),
    [
        ([[1, 0], [0, 1]], [[0.5, np.nan], [0.1, 0.2]], None, r"finite; clip 0, class 1"),
        ([[1, 0], [0, 1]], [[0.5, 0.1], [np.inf, 0.2]], None, r"finite; clip 1, class 0"),
        ([[1, 0], [0, 2]], [[0.5, 0.1], [0.1, 0.2]], None, r"binary.*clip 1, class 1"),
        ([[1, 0], [0, 0.5]], [[0.5, 0.1], [0.1, 0.2]], None, r"binary"),
        ([[1, 0], [0, 1]], [[0.5, 0.1, 0.3], [0.1, 0.2, 0.3]], None, r"shape"),
        ([1, 0, 1], [0.5, 0.1, 0.3], None, r"2-D"),
        ([[1, 0], [0, 1]], [[0.5, 0.1], [0.1, 0.2]], [[0, 1, 2], [1, 0, 1], [2, 1, 0]], r"\(2, 2\)"),
        ([[1, 0], [0, 1]], [[0.5, 0.1], [0.1, 0.2]], [[0, 1.5], [1.5, 0]], r"integers"),
        ([[1, 0], [0, 1]], [[0.5, 0.1], [0.1, 0.2]], [[1, 1], [1, 0]], r"zero diagonal"),
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.eye(3) * 0.5, [[0, 1, 2], [1, 0, 1], [3, 1, 0]], r"D\[0, 2\] = 2"),
        ([[1, 0], [0, 1]], [[0.5, 0.1], [0.1, 0.2]], [[0, 0], [0, 0]], r"classes 0 and 1 are at 0"),
        ([[0, 0], [0, 0]], [[0.5, 0.1], [0.1, 0.2]], [[0, 1], [1, 0]], r"No class has a positive"),
        ([[1, 0], [0, 1]], [[0.5, 0.1], [0.1, 0.2]], None, r"527"),  # default distances need 527 classes
    ],
)
def test_bad_input_is_a_clear_value_error(references, predictions, distances, message):
    if distances is None and "527" not in message:
        distances = [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match=message):
        compute_omap(np.array(references), np.array(predictions), distances)


def test_average_precision_is_sklearns_per_class_with_ties():
    """The library's one AP (zero-shot tags, the listening study): scikit-learn's per class, ties included."""
    y, scores, _ = random_case(3, clips=120, classes=6, decimals=1)  # one decimal: many ties
    expected = [average_precision_score(y[:, c], scores[:, c]) if y[:, c].any() else np.nan for c in range(6)]
    np.testing.assert_allclose(average_precision(y, scores), expected, rtol=0, atol=1e-12)
    # A perfect ranking is 1; a class without positives is NaN, not an error; no distance matrix is needed.
    ap = average_precision(np.array([[1, 0], [0, 0], [0, 1]]), np.array([[0.9, 0.2], [0.1, 0.3], [0.2, 0.1]]))
    assert ap[0] == 1.0 and ap[1] == pytest.approx(1 / 3)
    assert np.isnan(average_precision(np.zeros((3, 1)), np.array([[0.1], [0.2], [0.3]]))[0])
