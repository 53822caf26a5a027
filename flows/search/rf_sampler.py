"""A random-forest surrogate sampler for Optuna (SMAC's method, on scikit-learn).

SMAC3 (2.4.1) resolves with our pins but brings dask, distributed, ConfigSpace and
pynisher, and reaches Optuna only through an OptunaHub sampler fetched at run time,
which an offline machine cannot do; so this is the same idea in one small class:

- the first ``n_startup`` trials are random;
- then a random forest (scikit-learn) is fitted to the finished trials' parameters
  against a random weighted sum of their normalised log objectives (ParEGO's
  scalarisation, so successive trials cover the Pareto front), with a penalty for
  trials that miss a constraint;
- of ``n_candidates`` random designs and one-parameter neighbours of the best so far,
  the one with the lowest confidence bound (mean - kappa * spread across trees) is
  proposed; designs already tried are skipped.

Parameters must be categorical with numeric choices (the search space's bits, ratios, ranks and shares;
true/false count as 1/0, a rank of None, a layer kept whole, as 0).
"""
from __future__ import annotations

import numpy as np
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.trial import TrialState

from flows.search.study import constraints

PENALTY = 10.0  # added to the scalarised objective per unit of constraint violation (and for missing ones)


class RandomForestSampler(BaseSampler):
    def __init__(self, seed: int | None = None, n_startup: int = 8, n_candidates: int = 256,
                 kappa: float = 1.0, n_trees: int = 64):
        self._rng = np.random.default_rng(seed)
        self._random = RandomSampler(seed=seed)
        self._space = IntersectionSearchSpace()
        self.n_startup, self.n_candidates, self.kappa, self.n_trees = n_startup, n_candidates, kappa, n_trees

    def infer_relative_search_space(self, study, trial):
        space = self._space.calculate(study)
        return {k: d for k, d in space.items() if isinstance(d, CategoricalDistribution)}

    def sample_relative(self, study, trial, search_space):
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not search_space or len(done) < self.n_startup:
            return {}
        names = sorted(search_space)
        x = np.array([[_number(t.params[n]) for n in names] for t in done if all(n in t.params for n in names)])
        y = self._scalarise(done)
        from sklearn.ensemble import RandomForestRegressor

        forest = RandomForestRegressor(n_estimators=self.n_trees, min_samples_leaf=1,
                                       random_state=int(self._rng.integers(1 << 31))).fit(x, y)
        candidates = self._candidates(search_space, names, x[int(np.argmin(y))])
        seen = {tuple(row) for row in x}
        fresh = np.array([c for c in candidates if tuple(c) not in seen]) if len(candidates) else candidates
        if not len(fresh):
            return {}
        per_tree = np.stack([tree.predict(fresh) for tree in forest.estimators_])
        score = per_tree.mean(0) - self.kappa * per_tree.std(0)
        best = fresh[int(np.argmin(score))]
        return {n: _choice(search_space[n], v) for n, v in zip(names, best)}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def _scalarise(self, trials) -> np.ndarray:
        values = np.log(np.maximum(np.array([t.values for t in trials], dtype=float), 1e-9))
        lo, hi = values.min(0), values.max(0)
        norm = (values - lo) / np.where(hi > lo, hi - lo, 1.0)
        weights = self._rng.dirichlet(np.ones(values.shape[1]))
        penalty = np.array([sum(max(0.0, c) for c in constraints(t)) for t in trials])
        return norm @ weights + PENALTY * penalty

    def _candidates(self, space, names, best) -> np.ndarray:
        choices = [np.array([_number(c) for c in space[n].choices], dtype=float) for n in names]
        rand = np.stack([self._rng.choice(c, size=self.n_candidates) for c in choices], axis=1)
        near = []
        for i, c in enumerate(choices):
            for v in c:
                row = best.copy()
                row[i] = v
                near.append(row)
        return np.unique(np.concatenate([rand, np.array(near)]), axis=0)


def _number(choice) -> float:
    """A choice as the forest reads it: None (a low-rank layer kept whole) as 0, true/false as 1/0."""
    return 0.0 if choice is None else float(choice)


def _choice(dist: CategoricalDistribution, value: float):
    """The distribution's own choice (int, float, bool or None) equal to ``value``."""
    for c in dist.choices:
        if _number(c) == value:
            return c
    raise ValueError(f"{value} is not a choice of {dist.choices}")
