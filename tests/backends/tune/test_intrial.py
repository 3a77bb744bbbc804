"""The in-trial methods in a user's own Tuner (service.backends.tune.intrial): the registry's
controllers on Tune's param_space under the user's names, driven by a trial client as a
function trainable drives it (in this process, no Ray); and the documented example script
in a real Tuner."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import pytest
from ray import tune

from service.backends.tune.intrial import InTrialSearch
from service.backends.tune.spaces import from_tune
from service.core import registry
from service.core.space import SpaceError

PARAM_SPACE = {"learning_rate": tune.loguniform(1e-4, 1e-1), "opt": tune.choice(["adam", "sgd"]),
               "hflip": tune.choice([False, True]), "width_mult": tune.choice([1, 2]),
               "batch_size": 32}
NAMES = {"learning_rate": "lr", "opt": "optimizer", "hflip": "flip"}
OPTIONS: dict[str, dict[str, Any]] = {
    "hypera": {"groups": "optimization=lr,optimizer;data=flip;architecture=width_mult",
               "random_starts": 1}}
METHODS = [n for n, e in registry.entries().items() if e.kind == "controller"]
EPOCHS = 3
OWN_RATES = {"optsel-dqn", "optsel-ppo"}
"""Pham's selector answers its own optimizers at their own rates (the entry's controls)."""


def make(method: str, seed: int = 0) -> InTrialSearch:
    search = InTrialSearch(method, epochs=EPOCHS, num_samples=2, seed=seed, names=NAMES,
                           options=OPTIONS.get(method), in_process=True)
    assert search.set_search_properties("val_acc", "max", PARAM_SPACE)
    return search


def epoch_metrics(hp: dict[str, Any], epoch: int) -> dict[str, float]:
    """Better near lr 1e-2 with adam, rising with epochs."""
    acc = (0.9 - 0.05 * (math.log10(hp["learning_rate"]) + 2) ** 2
           + 0.03 * (hp["opt"] == "adam")) * (1 - 0.5 ** (epoch + 1))
    return {"val_acc": acc, "train_loss": 1 - acc, "val_loss": 1.2 - acc, "grad_norm": 1.0}


def run_trial(search: InTrialSearch, trial_id: str) -> tuple[dict[str, Any],
                                                              list[dict[str, Any]]]:
    """A trial as a function trainable runs it: its starting config, then per epoch the
    changes and the values in force."""
    config = search.suggest(trial_id)
    steps = []
    with search.trial(config, trial_id=trial_id) as trial:
        for epoch in range(EPOCHS):
            changes = trial.decide()
            steps.append({"changes": changes, "hp": dict(trial.hp)})
            trial.observe(epoch_metrics(trial.hp, epoch))
    return config, steps


def test_every_in_trial_method_is_offered() -> None:
    assert set(METHODS) == {"emerald-dynamic", "optsel-dqn", "optsel-ppo", "hypera"}


@pytest.mark.parametrize("method", METHODS)
def test_decisions_come_in_the_users_names_inside_the_space(method: str) -> None:
    search = make(method)
    space = from_tune(PARAM_SPACE)
    for t in range(2):
        config, steps = run_trial(search, f"t{t}")
        assert set(config) == set(space.names), config  # every searched name, no constant
        assert space.contains(config), config
        assert steps[0]["changes"], f"{method} changed nothing at the trial's first step"
        for step in steps:
            assert set(step["changes"]) <= set(space.names), step
            hp = dict(step["hp"])
            if method in OWN_RATES:
                assert hp.pop("opt") in ("sgd", "sam", "adam")
                assert 0 < hp.pop("learning_rate") <= 1
            assert space.contains(hp), (method, step)
    log = search.hosted.step_log()
    assert log and all(math.isfinite(row["reward"]) for row in log), log


@pytest.mark.parametrize("method", METHODS)
def test_restore_gives_the_identical_next_decision(method: str, tmp_path: Path) -> None:
    first = make(method, seed=3)
    run_trial(first, "a")
    path = str(tmp_path / "searcher.pkl")
    first.save(path)
    twin = make(method, seed=11)  # another seed: only the restored state can agree
    twin.restore(path)
    configs = [s.suggest("b") for s in (first, twin)]
    assert configs[0] == configs[1]
    answers = []
    for search, config in zip((first, twin), configs, strict=True):
        trial = search.trial(config, trial_id="b")
        answers.append([trial.decide()])
        trial.observe(epoch_metrics(trial.hp, 0))
        answers[-1].append(trial.decide())
    assert answers[0] == answers[1]


def test_restored_without_the_param_space_it_goes_on_identically(tmp_path: Path) -> None:
    """Tune's `Tuner.restore` restores the searcher from its file and gives no param_space
    again (unless the user re-specifies it): the saved state carries the space."""
    first = make("emerald-dynamic", seed=3)
    run_trial(first, "a")
    first.save(str(tmp_path / "searcher.pkl"))
    again = InTrialSearch("emerald-dynamic", epochs=EPOCHS, num_samples=2, names=NAMES,
                          in_process=True)
    again.restore(str(tmp_path / "searcher.pkl"))
    configs = [s.suggest("b") for s in (first, again)]
    assert configs[0] == configs[1] and set(configs[0]) == set(from_tune(PARAM_SPACE).names)
    answers = [s.trial(c, trial_id="b").decide() for s, c in zip((first, again), configs,
                                                                  strict=True)]
    assert answers[0] == answers[1]


def test_a_failed_epoch_and_an_errored_trial_close_as_failures() -> None:
    search = make("emerald-dynamic")
    config = search.suggest("nan")
    with search.trial(config, trial_id="nan") as trial:
        trial.decide()
        trial.observe(val_acc=math.nan, train_loss=math.nan)
    assert search.hosted.step_log()[-1]["failed"]
    config = search.suggest("err")
    with pytest.raises(RuntimeError, match="boom"), \
            search.trial(config, trial_id="err") as trial:
        trial.decide()
        raise RuntimeError("boom")  # the block does not finish the trial: Tune's error does
    steps = len(search.hosted.step_log())
    search.on_trial_complete("err", error=True)
    assert len(search.hosted.step_log()) == steps + 1
    assert search.hosted.step_log()[-1]["failed"]


def test_between_steps_the_trial_keeps_its_values() -> None:
    search = InTrialSearch("emerald-dynamic", epochs=4, num_samples=1, names=NAMES,
                           options={"step_epochs": 2}, in_process=True)
    search.set_search_properties("val_acc", "max", PARAM_SPACE)
    trial = search.trial(search.suggest("t"), trial_id="t")
    decided = []
    for epoch in range(4):
        decided.append(bool(trial.decide()))
        trial.observe(epoch_metrics(trial.hp, epoch))
    trial.finish()
    assert decided == [True, False, True, False]


def test_unusable_methods_and_spaces_are_refused_in_one_line() -> None:
    with pytest.raises(registry.RegistryError, match="'random' is no in-trial method; give "
                       "one of emerald-dynamic"):
        InTrialSearch("random", epochs=2, num_samples=2)
    with pytest.raises(registry.RegistryError, match="did you mean 'hypera'"):
        InTrialSearch("hyper", epochs=2, num_samples=2)
    with pytest.raises(SpaceError, match="names: 'lr_typo' not in the param_space"):
        InTrialSearch("emerald-dynamic", epochs=2, num_samples=2, names={"lr_typo": "lr"},
                      in_process=True).set_search_properties("val_acc", "max", PARAM_SPACE)
    with pytest.raises(SpaceError, match="names: 'learning_rate' and 'lr' are both 'lr'"):
        InTrialSearch("emerald-dynamic", epochs=2, num_samples=2, names=NAMES,
                      in_process=True).set_search_properties(
            "val_acc", "max", {**PARAM_SPACE, "lr": 0.1})
    no_aug = {k: v for k, v in PARAM_SPACE.items() if k != "hflip"}
    with pytest.raises(registry.RegistryError, match="augmentation agent needs a searched "
                       "augmentation dimension"):
        InTrialSearch("emerald-dynamic", epochs=2, num_samples=2,
                      names={k: v for k, v in NAMES.items() if k != "hflip"},
                      in_process=True).set_search_properties("val_acc", "max", no_aug)


def _example() -> Any:
    path = Path(__file__).parents[3] / "docs" / "examples" / "in_trial_controller.py"
    spec = importlib.util.spec_from_file_location("in_trial_controller", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_documented_example_runs_in_a_tuner(ray_session, tmp_path: Path) -> None:
    example = _example()
    results = example.main(epochs=2, samples=2, storage=str(tmp_path))
    assert not results.errors and len(results) == 2
    space = from_tune(example.PARAM_SPACE)
    for result in results:
        df = result.metrics_dataframe
        assert len(df) == 2 and df["val_acc"].between(0, 1).all()
        for _, row in df.iterrows():
            hp = {"learning_rate": row["lr"], "opt": row["opt"], "hflip": bool(row["hflip"])}
            assert space.contains(hp), hp
    # The controller decided every epoch of both trials and closed each step.
    log = (tmp_path / "in-trial-emerald-dynamic" / "agent_steps.csv").read_text()
    assert len(log.strip().splitlines()) == 1 + 2 * 2


def test_a_trial_without_its_controller_says_how_to_find_it(ray_session) -> None:
    search = InTrialSearch("emerald-dynamic", epochs=2, num_samples=1, name="never-started")
    with pytest.raises(RuntimeError, match="no in-trial controller 'never-started' is "
                       "running: after Tuner.restore in a new process, build the "
                       "InTrialSearch with the original run's name="):
        search.trial({}, trial_id="t")
