"""Multi-objective arithmetic as pure numpy functions (as Ray Tune keeps PBT's rules in
`schedulers/pbt.py`): Pareto masks and non-dominated sorting over mixed max/min objectives,
exact hypervolume, ParEGO's weight lattice and augmented Chebyshev scalarisation, and
normalisation by given or observed bounds. No Ray, no torch: config checks, both backends'
rows and the reports share them.

Points are arrays of shape (n, k), one column per objective; `modes` says per column
whether it is maximised ("max") or minimised ("min"). A row with a non-finite value is no
point of any front.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

PAREGO_RHO = 0.05
"""Knowles 2006 ParEGO: the augmented Chebyshev function's weight on the weighted sum."""
PAREGO_S: dict[int, int] = {2: 10, 3: 4}
"""Knowles 2006 ParEGO: the lattice's divisions s per number of objectives (11 weight
vectors for 2 objectives, 15 for 3)."""
MAX_OBJECTIVES = 3
"""The most objectives compared: the lattice and hypervolume are exact here for 2 and 3."""


def _signs(modes: Sequence[str], k: int) -> np.ndarray:
    """+1 for a minimised column, -1 for a maximised one (so smaller is better after it)."""
    if len(modes) != k:
        raise ValueError(f"{len(modes)} modes for {k} objectives; give one per objective")
    bad = [m for m in modes if m not in ("max", "min")]
    if bad:
        raise ValueError(f"mode {bad[0]!r} is not max or min")
    return np.array([1.0 if m == "min" else -1.0 for m in modes])


def as_minimised(points: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str]
                 ) -> np.ndarray:
    """The points with maximised columns negated: every column is then minimised."""
    array = np.asarray(points, dtype=float)
    if array.ndim != 2:
        array = array.reshape(-1, len(modes))
    return array * _signs(modes, array.shape[1])


def pareto_mask(points: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str]
                ) -> np.ndarray:
    """True for each point no other point dominates (at least as good in every objective,
    better in one); equal points are all kept; non-finite rows are False."""
    q = as_minimised(points, modes)
    finite = np.all(np.isfinite(q), axis=1)
    mask = finite.copy()
    for i in np.flatnonzero(finite):
        others = q[finite]
        dominated = np.all(others <= q[i], axis=1) & np.any(others < q[i], axis=1)
        mask[i] = not dominated.any()
    return mask


def non_dominated_sort(points: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str]
                       ) -> np.ndarray:
    """Each point's front (NSGA-II's non-dominated sorting, Deb et al. 2002): 0 for the
    Pareto front, 1 for the front once it is removed, ...; -1 for non-finite rows."""
    q = as_minimised(points, modes)
    rank = np.full(len(q), -1)
    left = np.flatnonzero(np.all(np.isfinite(q), axis=1))
    front = 0
    while left.size:
        mask = pareto_mask(q[left], ["min"] * q.shape[1])
        rank[left[mask]] = front
        left = left[~mask]
        front += 1
    return rank


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str],
                reference: Sequence[float]) -> float:
    """The volume the points dominate up to `reference` (worse than every point counted in
    every objective): exact, a sweep in 2-D and slices of it in 3-D. Points not strictly
    better than the reference in every objective, and non-finite rows, add nothing."""
    q = as_minimised(points, modes)
    k = q.shape[1]
    if len(reference) != k:
        raise ValueError(f"reference has {len(reference)} values for {k} objectives; "
                         "give one per objective")
    if k > MAX_OBJECTIVES or k < 1:
        raise ValueError(f"hypervolume of {k} objectives; give 1 to {MAX_OBJECTIVES}")
    r = np.asarray(reference, dtype=float) * _signs(modes, k)
    if not np.all(np.isfinite(r)):
        raise ValueError("reference holds a non-finite value; give finite numbers")
    q = q[np.all(np.isfinite(q), axis=1) & np.all(q < r, axis=1)]
    if not len(q):
        return 0.0
    q = q[pareto_mask(q, ["min"] * k)]
    return float(_hv(q, r))


def _hv(q: np.ndarray, r: np.ndarray) -> float:
    """Hypervolume of minimised points all strictly inside the reference box."""
    if q.shape[1] == 1:
        return float(r[0] - q[:, 0].min())
    if q.shape[1] == 2:
        order = np.lexsort((q[:, 1], q[:, 0]))  # by the first, ties by the second
        total, best_y = 0.0, r[1]
        xs = q[order, 0]
        ys = q[order, 1]
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            best_y = min(best_y, y)
            right = xs[i + 1] if i + 1 < len(xs) else r[0]
            total += (right - x) * (r[1] - best_y)
        return total
    # slices along the last objective: between consecutive values, the points at or below
    # the slice's bottom dominate a (k-1)-dimensional region of constant area
    order = np.argsort(q[:, -1], kind="stable")
    q = q[order]
    total = 0.0
    for i in range(len(q)):
        top = q[i + 1, -1] if i + 1 < len(q) else r[-1]
        if top > q[i, -1]:
            total += (top - q[i, -1]) * _hv(q[: i + 1, :-1], r[:-1])
    return total


def simplex_lattice(k: int, s: int | None = None) -> np.ndarray:
    """Every weight vector (l_1/s, ..., l_k/s) with non-negative integers l summing to s:
    ParEGO's weights (Knowles 2006: s=10 for 2 objectives, s=4 for 3)."""
    if s is None:
        if k not in PAREGO_S:
            raise ValueError(f"ParEGO's lattice is defined for 2 or 3 objectives, not {k}")
        s = PAREGO_S[k]
    out = [c for c in itertools.product(range(s + 1), repeat=k) if sum(c) == s]
    return np.array(sorted(out, reverse=True), dtype=float) / s


def parego_weights(k: int, seed: int, key: int) -> np.ndarray:
    """The weight vector of trial `key` in a cell seeded `seed`: one of ParEGO's lattice
    vectors (Knowles 2006), drawn from a generator seeded by both, so it is reproducible
    and independent of the order trials report in."""
    lattice = simplex_lattice(k)
    rng = np.random.default_rng([int(seed) % 2**32, int(key) % 2**32])
    return lattice[int(rng.integers(len(lattice)))]


def normalise(points: np.ndarray | Sequence[Sequence[float]], modes: Sequence[str],
              bounds: Sequence[Sequence[float] | None] | None = None) -> np.ndarray:
    """The points as costs in [0, 1] per objective (0 best, 1 worst): a minimised value v
    becomes (v - low) / (high - low), a maximised one (high - v) / (high - low). `bounds`
    gives (low, high) per objective; where it is absent (or None for a column) the observed
    finite range is used (ParEGO's running bounds). Values outside given bounds fall outside
    [0, 1]; a column of one value is 0."""
    array = np.asarray(points, dtype=float)
    if array.ndim != 2:
        array = array.reshape(-1, len(modes))
    k = array.shape[1]
    signs = _signs(modes, k)
    given = list(bounds) if bounds is not None else [None] * k
    if len(given) != k:
        raise ValueError(f"{len(given)} bounds for {k} objectives; give one per objective")
    out = np.empty_like(array)
    for j in range(k):
        column = array[:, j]
        if given[j] is not None:
            low, high = (float(b) for b in given[j])  # type: ignore[union-attr]
        else:
            finite = column[np.isfinite(column)]
            low, high = (float(finite.min()), float(finite.max())) if finite.size else (0, 1)
        span = high - low
        if span <= 0:
            out[:, j] = np.where(np.isfinite(column), 0.0, np.nan)
            continue
        out[:, j] = (column - low) / span if signs[j] > 0 else (high - column) / span
    return out


def augmented_chebyshev(costs: np.ndarray | Sequence[float], weights: Sequence[float],
                        rho: float = PAREGO_RHO) -> np.ndarray | float:
    """ParEGO's scalarisation of normalised costs (Knowles 2006): max_j(w_j c_j) +
    rho * sum_j(w_j c_j), smaller is better; one value per row (a float for one point)."""
    c = np.asarray(costs, dtype=float)
    w = np.asarray(weights, dtype=float)
    if c.shape[-1] != w.shape[0]:
        raise ValueError(f"{w.shape[0]} weights for {c.shape[-1]} objectives")
    weighted = c * w
    value = weighted.max(axis=-1) + rho * weighted.sum(axis=-1)
    return float(value) if np.ndim(value) == 0 else value
