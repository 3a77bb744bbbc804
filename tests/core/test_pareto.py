"""The multi-objective arithmetic (service.core.pareto) on fronts known by hand and by
formula: Pareto masks, sorting, exact hypervolume and its properties, ParEGO's lattice and
scalarisation, normalisation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from service.core.pareto import (
    augmented_chebyshev,
    hypervolume,
    non_dominated_sort,
    normalise,
    parego_weights,
    pareto_mask,
    simplex_lattice,
)

MIN2 = ["min", "min"]


def zdt1(n: int) -> np.ndarray:
    """n points of ZDT1's true front: f2 = 1 - sqrt(f1), f1 in [0, 1] (both minimised)."""
    f1 = np.linspace(0.0, 1.0, n)
    return np.column_stack([f1, 1.0 - np.sqrt(f1)])


def test_mask_mixed_modes():
    # accuracy (max) against size (min): (0.9, 5) and (0.8, 2) trade off; (0.7, 6) loses
    points = [[0.9, 5.0], [0.8, 2.0], [0.7, 6.0], [0.9, 5.0], [np.nan, 1.0]]
    assert pareto_mask(points, ["max", "min"]).tolist() == [True, True, False, True, False]
    # the same numbers with both maximised: (0.7, 6) now has the largest second value
    assert pareto_mask(points, ["max", "max"]).tolist() == [True, False, True, True, False]


def test_non_dominated_sort_peels_fronts():
    points = [[1, 1], [2, 2], [3, 3], [1, 3], [3, 1], [np.inf, 0]]
    assert non_dominated_sort(points, MIN2).tolist() == [0, 1, 2, 1, 1, -1]


def test_hypervolume_by_hand_2d():
    # staircase (1,3), (2,2), (3,1) against (4,4): 3 + 2 + 1 = 6 unit squares
    assert hypervolume([[1, 3], [2, 2], [3, 1]], MIN2, [4, 4]) == pytest.approx(6.0)
    # maximised accuracy with minimised size: (0.9, 5), (0.8, 2) against (0.5, 10)
    # = 0.3 x 8 (size 2..10 at acc 0.5..0.8) + 0.1 x 5 (size 5..10 at acc 0.8..0.9)
    assert hypervolume([[0.9, 5], [0.8, 2]], ["max", "min"], [0.5, 10]) == pytest.approx(2.9)


def test_hypervolume_by_hand_3d():
    # one point: a box; two points: inclusion-exclusion by hand
    assert hypervolume([[1, 1, 1]], ["min"] * 3, [3, 3, 3]) == pytest.approx(8.0)
    a, b = [1, 2, 2], [2, 1, 1]
    # box(a) = 2*1*1 = 2, box(b) = 1*2*2 = 4, overlap = [2,3]x[2,3]x[2,3] = 1
    assert hypervolume([a, b], ["min"] * 3, [3, 3, 3]) == pytest.approx(5.0)


def test_hypervolume_3d_matches_monte_carlo_free_grid_count():
    """On integer points the dominated volume is a count of unit cells: counted directly."""
    rng = np.random.default_rng(3)
    points = rng.integers(0, 6, size=(12, 3)).astype(float)
    ref = np.array([6.0, 6.0, 6.0])
    cells = 0
    for cell in itertools.product(range(6), repeat=3):
        if np.any(np.all(points <= np.array(cell), axis=1)):
            cells += 1
    assert hypervolume(points, ["min"] * 3, ref) == pytest.approx(cells)


def test_zdt1_true_front_hypervolume():
    """ZDT1's front against (1, 1): the area above 1 - sqrt(x) in the unit square, the
    integral of sqrt(x) = 2/3, approached from below by a fine sampling of the front."""
    assert hypervolume(zdt1(4001), MIN2, [1.0, 1.0]) == pytest.approx(2 / 3, abs=1e-3)
    assert hypervolume(zdt1(4001), MIN2, [1.0, 1.0]) < 2 / 3


def test_any_searchers_front_stays_below_the_true_front():
    """Random points of ZDT1's feasible region (f2 >= 1 - sqrt(f1)) never beat the front's
    hypervolume, whatever their number."""
    rng = np.random.default_rng(0)
    f1 = rng.uniform(0, 1, 500)
    f2 = 1 - np.sqrt(f1) + rng.uniform(0, 1, 500)
    found = np.column_stack([f1, f2])
    assert hypervolume(found, MIN2, [1.0, 2.0]) <= hypervolume(
        zdt1(2001), MIN2, [1.0, 2.0]) + 1e-3
    assert hypervolume(found, MIN2, [1.0, 2.0]) < 1 + 2 / 3  # the front's, by formula


def test_properties_monotone_order_dominated():
    rng = np.random.default_rng(1)
    points = rng.uniform(0, 1, size=(30, 3))
    modes = ["max", "min", "min"]
    ref = [0.0, 1.0, 1.0]
    volumes = [hypervolume(points[:i], modes, ref) for i in range(1, 31)]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(volumes))  # monotone
    assert volumes[-1] > volumes[0]
    shuffled = points[rng.permutation(30)]
    assert hypervolume(shuffled, modes, ref) == pytest.approx(volumes[-1])  # order
    front = points[pareto_mask(points, modes)]
    assert len(front) < len(points)
    assert hypervolume(front, modes, ref) == pytest.approx(volumes[-1])  # dominated add 0
    worse = front * np.array([0.5, 1.0, 1.0]) + np.array([0.0, 0.01, 0.01])
    assert hypervolume(np.vstack([front, worse]), modes, ref) == pytest.approx(volumes[-1])


def test_points_beyond_the_reference_add_nothing():
    assert hypervolume([[5, 0], [np.nan, 1]], MIN2, [4, 4]) == 0.0
    assert hypervolume([], MIN2, [4, 4]) == 0.0


def test_hypervolume_refusals():
    with pytest.raises(ValueError, match="reference has 3 values for 2 objectives"):
        hypervolume([[1, 1]], MIN2, [2, 2, 2])
    with pytest.raises(ValueError, match="hypervolume of 4 objectives"):
        hypervolume([[1, 1, 1, 1]], ["min"] * 4, [2] * 4)
    with pytest.raises(ValueError, match="'maximise' is not max or min"):
        hypervolume([[1, 1]], ["maximise", "min"], [2, 2])


def test_parego_lattice_knowles_2006():
    two, three = simplex_lattice(2), simplex_lattice(3)
    assert len(two) == 11 and len(three) == 15
    assert np.allclose(two.sum(axis=1), 1) and np.allclose(three.sum(axis=1), 1)
    assert [1.0, 0.0] in two.tolist() and [0.5, 0.5] in two.tolist()
    with pytest.raises(ValueError, match="2 or 3 objectives"):
        simplex_lattice(4)


def test_parego_weights_seeded_per_trial():
    drawn = [tuple(parego_weights(2, 7, t)) for t in range(40)]
    assert drawn == [tuple(parego_weights(2, 7, t)) for t in range(40)]  # reproducible
    assert len(set(drawn)) > 5  # trials get different weights
    assert drawn != [tuple(parego_weights(2, 8, t)) for t in range(40)]  # seed matters
    assert all(list(w) in simplex_lattice(2).tolist() for w in drawn)


def test_augmented_chebyshev():
    # weights (0.5, 0.5): max(0.1, 0.4) + 0.05 * 0.5 = 0.425
    assert augmented_chebyshev([0.2, 0.8], [0.5, 0.5]) == pytest.approx(0.425)
    # all-weight on the first cost ranks by it alone, ties broken by rho's sum
    costs = np.array([[0.1, 0.9], [0.3, 0.0]])
    assert augmented_chebyshev(costs, [1.0, 0.0]).tolist() == pytest.approx([0.105, 0.315])
    # a dominated point never scores better under any lattice weight
    for w in simplex_lattice(2):
        assert augmented_chebyshev([0.3, 0.4], w) <= augmented_chebyshev([0.35, 0.4], w)


def test_normalise_given_and_running_bounds():
    points = [[0.9, 5.0], [0.5, 1.0], [0.7, 3.0]]
    costs = normalise(points, ["max", "min"], [(0.0, 1.0), (1.0, 5.0)])
    assert np.allclose(costs, [[0.1, 1.0], [0.5, 0.0], [0.3, 0.5]])
    running = normalise(points, ["max", "min"])  # observed ranges 0.5..0.9, 1..5
    assert np.allclose(running, [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    assert normalise([[1.0, 2.0], [1.0, 3.0]], MIN2)[:, 0].tolist() == [0.0, 0.0]
