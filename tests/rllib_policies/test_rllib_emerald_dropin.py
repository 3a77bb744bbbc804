"""EmeraldSearch built without a space, as a drop-in searcher of a user's own Tuner: its
agents are the service's own on the same space, the user's names take the agents' roles,
the Tuner's metric and mode make the reward, and a space the agents cannot use is refused in
one line naming what is missing and the fix. (The drop-in suite itself - NaN results,
constants, save/restore, a real Tuner - is tests/backends/tune/test_dropin_searchers.py.)"""

from __future__ import annotations

import math

import pytest
from ray import tune

from rllib_policies import EmeraldSearch, EmeraldSettings
from service.backends.tune.spaces import to_tune
from service.core.space import SearchSpace, SpaceError, default_space
from service.testing import score

FAST = EmeraldSettings(batch_size=4, learning_starts=2)
SPACE = default_space()


def drive(searcher: EmeraldSearch, n: int, rename: dict[str, str] | None = None
          ) -> list[dict]:
    """`n` trials, each completed with `score` of its config (in the catalogue's names)."""
    back = {v: k for k, v in (rename or {}).items()}
    configs = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        hp = {back.get(k, k): v for k, v in config.items()}
        value = score(hp)
        searcher.on_trial_complete(f"t{i}", {"val_acc": value, "train_loss": 1 - value})
    return configs


def test_on_the_services_space_the_drop_in_is_the_same_method() -> None:
    service = EmeraldSearch(SPACE, seed=4, settings=FAST)
    assert (service.metric, service.mode) == ("val_acc", "max")  # the callers' defaults
    dropin = EmeraldSearch(seed=4, settings=FAST)
    dropin.set_search_properties("val_acc", "max", to_tune(SPACE))
    assert drive(service, 8) == drive(dropin, 8)
    assert [r["reward"] for r in service.log] == [r["reward"] for r in dropin.log]


def test_the_users_names_play_the_roles() -> None:
    names = {"learning_rate": "lr", "opt": "optimizer", "hflip": "flip", "rot": "rotation"}
    space = {user: to_tune(SPACE)[role] for user, role in names.items()}
    mapped = EmeraldSearch(seed=4, settings=FAST, names=names)
    mapped.set_search_properties("val_acc", "max", {**space, "epochs": 3})
    plain = EmeraldSearch(seed=4, settings=FAST)
    plain.set_search_properties("val_acc", "max", {role: space[user]
                                                   for user, role in names.items()})
    got = drive(mapped, 6, rename=names)
    assert all(set(c) == set(names) for c in got)  # the user's names; no constant
    want = drive(plain, 6)
    assert got == [{user: c[role] for user, role in names.items()} for c in want]


def test_a_constant_in_a_role_is_the_agents_only_choice() -> None:
    searcher = EmeraldSearch(seed=0, settings=FAST)
    searcher.set_search_properties("val_acc", "max", {
        "optimizer": "sgd", "lr": tune.loguniform(1e-4, 1e-1), "flip": tune.choice([False, True])})
    assert searcher.actions.optimizers == ("sgd",)
    assert {"lr", "flip"} == set(searcher.suggest("t"))


def test_mode_min_and_the_loss_make_the_reward() -> None:
    rewards = {}
    for value in (0.1, 0.9):
        searcher = EmeraldSearch(seed=0, settings=FAST, loss_metric="loss")
        searcher.set_search_properties("error", "min", to_tune(SPACE))
        searcher.suggest("t")
        searcher.on_trial_complete("t", {"error": value, "loss": 2.0})
        rewards[value] = searcher.log[-1]["reward"]
        assert searcher.log[-1]["train_loss"] == 2.0
    assert rewards[0.1] > rewards[0.9], "under mode min a lower error must reward more"
    searcher = EmeraldSearch(seed=0, settings=FAST)
    searcher.set_search_properties("score", "max", to_tune(SPACE))
    searcher.suggest("t")
    searcher.on_trial_complete("t", {"score": 0.7})
    assert searcher.log[-1]["train_loss"] == -0.7  # no loss reported: the metric as one
    assert not searcher.log[-1]["failed"]


REFUSALS = [
    ({"lr": tune.loguniform(1e-4, 1e-1)}, None,
     "no augmentation dimension for EMERALD-O's augmentation agent .*names={'hflip': 'flip'}"),
    ({"flip": tune.choice([False, True])}, None,
     "no optimizer or learning rate .* names={'learning_rate': 'lr', 'opt': 'optimizer'}"),
    ({"flip": tune.choice([False, True]), "lr": 0.1, "depth": tune.randint(1, 4)}, None,
     "'depth' have no role for EMERALD-O's agents .* make them constants"),
    ({"flip": tune.choice([False, True]), "step": tune.loguniform(1e-4, 1e-1)},
     {"step": "rate"}, "'step' -> 'rate' is no role; roles are augmentation"),
    ({"flip": tune.choice([False, True])}, {"lr_typo": "lr"},
     "'lr_typo' is not in the param_space"),
    ({"flip": tune.choice([False, True]), "lr": tune.uniform(0.0, 1.0)}, None,
     "learning rate must be a tune.loguniform or tune.uniform above 0"),
    ({"flip": tune.choice([False, True]), "optimizer": tune.randint(0, 3)}, None,
     "optimizer must be a tune.choice of names"),
    ({"flip": tune.choice([False, True]), "lr": tune.loguniform(1e-4, 1e-1),
      "my_lr": tune.loguniform(1e-4, 1e-1)}, {"my_lr": "lr"},
     "'lr' and 'my_lr' both play 'lr'"),
]


@pytest.mark.parametrize(("param_space", "names", "match"), REFUSALS)
def test_an_unusable_space_is_refused_in_one_line(param_space, names, match) -> None:
    with pytest.raises(SpaceError, match=match) as err:
        EmeraldSearch(names=names).set_search_properties("score", "max", param_space)
    assert "\n" not in str(err.value)


def test_used_before_the_param_space_it_says_how_to_use_it() -> None:
    with pytest.raises(RuntimeError, match="pass it as a Tuner's search_alg"):
        EmeraldSearch().suggest("t")


def test_a_space_given_to_the_constructor_is_kept() -> None:
    searcher = EmeraldSearch(SearchSpace.from_dict({"flip": [False, True], "lr": 1e-3,
                                                    "optimizer": ["adam", "sgd"]}))
    assert searcher.set_search_properties("score", "min", {"anything": tune.uniform(0, 1)})
    assert (searcher.metric, searcher.mode) == ("val_acc", "max")
    assert set(searcher.suggest("t")) == {"flip", "optimizer", "lr"}
    assert math.isfinite(searcher.epsilon)


def test_restored_without_the_param_space_it_goes_on_identically(tmp_path) -> None:
    """Tune's `Tuner.restore` restores the searcher from its file and gives no param_space
    again (unless the user re-specifies it): the saved state carries the space."""
    names = {"learning_rate": "lr", "hflip": "flip"}
    first = EmeraldSearch(seed=2, settings=FAST, names=names)
    first.set_search_properties("score", "max", {
        "learning_rate": tune.loguniform(1e-4, 1e-1), "hflip": tune.choice([False, True]),
        "alpha": 3})
    drive(first, 3, rename=names)
    first.save(str(tmp_path / "searcher.pkl"))
    again = EmeraldSearch(seed=99, settings=FAST, names=names)
    again.restore(str(tmp_path / "searcher.pkl"))
    nxt = first.suggest("n")
    assert set(nxt) == set(names) and again.suggest("n") == nxt
