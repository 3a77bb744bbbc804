"""The importable searcher contract (service.testing): a user's searcher subclassed into it
passes, and one that breaks the contract fails the test that checks it."""

from __future__ import annotations

import random

import numpy as np
import pytest
from ray.tune.search import Searcher

from baselines._simple import RandomSearch
from service.testing import SearcherContract


class TestARandomSearcherAsAUserWouldWriteIt(SearcherContract):
    draws = 20

    def make_searcher(self, space, seed):
        return RandomSearch(space, seed=seed, metric="val_acc", mode="max")


class OutOfRange(Searcher):
    """Suggests a learning rate ten times above the space's range, and forgets its random
    state on restore."""

    def __init__(self, space, seed: int) -> None:
        super().__init__(metric="val_acc", mode="max")
        self.space, self.rng = space, random.Random(seed)

    def suggest(self, trial_id: str) -> dict:
        config = self.space.sample(np.random.default_rng(self.rng.randrange(2**31)))
        config["lr"] = self.space["lr"].high * 10
        return config

    def on_trial_complete(self, trial_id, result=None, error=False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        open(checkpoint_path, "w").close()

    def restore(self, checkpoint_path: str) -> None:
        self.rng = random.Random(12345)


class BrokenContract(SearcherContract):
    def make_searcher(self, space, seed):
        return OutOfRange(space, seed)


def test_a_searcher_outside_its_space_fails_the_contract() -> None:
    with pytest.raises(AssertionError, match="lr=.*outside"):
        BrokenContract().test_suggestions_stay_inside_the_space()


def test_a_searcher_that_forgets_its_state_on_restore_fails_the_contract(tmp_path) -> None:
    with pytest.raises(AssertionError):
        BrokenContract().test_save_and_restore_give_the_same_next_suggestions(tmp_path)


def test_make_searcher_must_be_given() -> None:
    with pytest.raises(NotImplementedError, match="make_searcher"):
        SearcherContract().test_suggestions_stay_inside_the_space()
