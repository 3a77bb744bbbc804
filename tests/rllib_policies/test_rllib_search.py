"""The EMERALD-O searcher and controller: learning beats random search on a seeded objective,
restore continues identically, and the dynamic mode switches settings inside real trials."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from rllib_policies import EmeraldSearch, EmeraldSettings
from service.backends import plans
from service.backends.tune.searching import ControllerHost
from service.core.api import ControllerPlan, Observation
from service.core.space import SearchSpace
from tests.objective import score

SPACE = SearchSpace.from_dict({
    "flip": [False, True],
    "rotation": [0, 10, 20, 30],
    "optimizer": ["adam", "sgd", "rmsprop"],
    "lr": {"loguniform": [1e-5, 1e-1]},
})
STEPS = 150
FAST = EmeraldSettings(epsilon_decay=0.03)


def objective(config: dict, rng: np.random.Generator) -> dict:
    """Validation accuracy after 3 epochs of the test objective, with a little noise."""
    acc = score(config, 3) + rng.normal(0, 0.01)
    return {"val_acc": acc, "train_loss": 1.0 - acc, "training_iteration": 3}


def run(searcher: EmeraldSearch, steps: int, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    for t in range(steps):
        config = searcher.suggest(f"t{t}")
        searcher.on_trial_complete(f"t{t}", result=objective(config, rng))


def test_greedy_policy_beats_random_search() -> None:
    """Five seeds x 150 steps; the greedy configs' scores against 500 random configs'
    scores, one-sided Mann-Whitney U at 1%."""
    greedy = []
    for seed in range(5):
        searcher = EmeraldSearch(SPACE, seed=seed, settings=FAST, max_epochs=3)
        run(searcher, STEPS, seed)
        greedy.append(score(searcher.greedy_config(), 3))
        searcher.learner.stop()
    rng = np.random.default_rng(7)
    random_scores = [score(SPACE.sample(rng), 3) for _ in range(500)]
    test = stats.mannwhitneyu(greedy, random_scores, alternative="greater")
    assert test.pvalue < 0.01, (greedy, np.median(random_scores))
    assert np.mean(greedy) > np.quantile(random_scores, 0.75)


def test_restore_gives_identical_greedy_actions_and_keeps_learning(tmp_path) -> None:
    first = EmeraldSearch(SPACE, seed=3, settings=FAST, max_epochs=3)
    run(first, 40, 3)
    pending = first.suggest("open")  # a trial still running at save time
    path = str(tmp_path / "emerald.pkl")
    first.save(path)
    second = EmeraldSearch(SPACE, seed=99, settings=FAST, max_epochs=3)
    second.restore(path)
    assert second.greedy_config() == first.greedy_config()
    assert (tmp_path / "agent_steps.csv").exists()
    rng = np.random.default_rng(5)
    result = objective(pending, rng)
    for searcher in (first, second):
        searcher.on_trial_complete("open", result=dict(result))
    assert second.log[-1]["reward"] == pytest.approx(first.log[-1]["reward"])
    assert [second.suggest(f"n{i}") for i in range(5)] == [first.suggest(f"n{i}")
                                                           for i in range(5)]
    assert second.learner.replay_size == first.learner.replay_size


def test_failures_get_the_penalty_reward() -> None:
    searcher = EmeraldSearch(SPACE, seed=0, settings=FAST, max_epochs=3)
    for i, (result, error) in enumerate([(None, True), ({"val_acc": float("nan")}, False),
                                         ({"val_acc": 0.5, "train_loss": 1.0,
                                           "training_iteration": 1}, False)]):
        searcher.suggest(f"f{i}")
        searcher.on_trial_complete(f"f{i}", result=result, error=error)
    rewards = [row["reward"] for row in searcher.log]
    assert rewards[0] == rewards[1] == -1.0
    assert searcher.log[2]["early_stopped"] and rewards[2] < 0.5


def _host(seed: int) -> ControllerHost:
    plan = ControllerPlan("emerald-dynamic", 2, 3, seed=seed,
                          controller="rllib_policies.emerald._controller:EmeraldController",
                          controller_options={"epsilon_decay": 0.03})
    return ControllerHost(plan, SPACE, in_process=True)


def test_controller_in_process_decides_and_restores(tmp_path) -> None:
    search = _host(0)
    assert search.suggest("a") == {}
    controller = search.hosted.controller
    hp = {"optimizer": "adam", "lr": 1e-3}
    first = controller.decide(Observation("a", 0, 3, hp, []))
    assert SPACE.contains(first)
    rows = [{"val_acc": 0.55, "train_loss": 0.9, "grad_norm": 1.0},
            {"val_acc": 0.6, "train_loss": 0.8, "grad_norm": 1.2}]
    controller.decide(Observation("a", 2, 3, first, rows))
    controller.finish(Observation("a", 3, 3, first, [{**rows[-1], "val_acc": 0.7}]))
    controller.learn()
    log = controller.step_log()
    assert log[0]["reward"] == pytest.approx(0.6 * 0.5, abs=0.1)
    assert len(log) == 2 and not controller.states
    path = str(tmp_path / "ctl.pkl")
    search.save(path)
    again = _host(1)
    again.restore(path)
    assert again.hosted.controller.greedy(hp) == controller.greedy(hp)
    assert again.hosted.controller.agents.steps == controller.agents.steps


def test_dynamic_mode_switches_settings_inside_real_trials(ray_session, tmp_path) -> None:
    from service.backends.tune.experiment import build_tuner
    from service.core.config import build_config
    from service.core.layout import Cell

    cfg = build_config({
        "name": "dyn", "storage": str(tmp_path), "searchers": ["emerald-dynamic"],
        "backbones": ["resnet18@0.0625"], "budget": {"trials": 2, "epochs": 3},
        "concurrency": 2, "dataset": {"name": "synthetic", "max_train": 100},
        "space": SPACE.to_dict(),
    })
    results = build_tuner(cfg, Cell("emerald-dynamic", "resnet18@0.0625", 0)).fit()
    assert not results.errors and len(results) == 2
    for result in results:
        df = result.metrics_dataframe
        assert len(df) == 3
        for _, row in df.iterrows():  # every epoch reports the settings the agents chose
            assert SPACE.contains({"lr": row["hp_lr"], "optimizer": row["hp_optimizer"],
                                   "flip": bool(row["hp_flip"]),
                                   "rotation": int(row["hp_rotation"])})
    steps = (cfg.experiment_dir / "emerald-dynamic__resnet18_w0.0625__s0" / "agent_steps.csv")
    assert steps.exists()
    import pandas as pd

    log = pd.read_csv(steps)
    assert len(log) == 6  # 2 trials x 3 one-epoch steps, each closed with its reward
    assert log.reward.notna().all()


# Issue 13: exploration that fits the budget, and equal epoch budgets.


def test_budget_epsilon_reaches_its_end_at_the_stated_fraction() -> None:
    from rllib_policies.emerald._encoding import budget_epsilon

    values = [budget_epsilon(t, 10) for t in (0, 5, 10, 20)]
    assert values == pytest.approx([1.0, 0.525, 0.05, 0.05])
    settings = EmeraldSettings.from_options(epsilon="budget", epsilon_fraction=0.25,
                                            decisions=40)
    assert settings.epsilon_horizon == 10
    assert EmeraldSettings.from_options(epsilon="decay").epsilon_horizon is None


def test_emerald_plans_fit_the_schedule_to_their_budget() -> None:
    from service.core.api import Budget

    def plan(name: str, **options):
        return plans.build(name, space=SPACE, metric="val_acc", mode="max", seed=0,
                              budget=Budget(trials=12, epochs=4), options=options)

    from rllib_policies.emerald._factories import asha_mean_epochs

    # ASHA (rungs 1, 3, 9 of 12 epochs, a third going on): 1 + 2/3 + 6/9 + 3/27 epochs.
    assert asha_mean_epochs(12, 1, 3) == pytest.approx(22 / 9)
    assert asha_mean_epochs(4, 1, 3) == pytest.approx(1 + 2 / 3 + 1 / 9)
    searcher = plan("emerald").searcher.searcher  # inside the result guard
    # 48 epochs afford 27 ASHA trials of 1.78 epochs on average: half of them explore.
    assert searcher.settings.epsilon_horizon == 14
    agents = searcher.agents
    agents.steps = 14
    assert agents.epsilon == pytest.approx(0.05)
    agents.steps = 7
    assert agents.epsilon == pytest.approx(0.525)
    no_stop = plan("emerald", early_stopping=False).searcher.searcher
    assert no_stop.settings.epsilon_horizon == 6  # half of the 12 trials
    dynamic = plan("emerald-dynamic", step_epochs=2)
    assert dynamic.controller_options["decisions"] == 24  # 12 trials x 2 steps
    paper = plan("emerald", epsilon="decay")
    assert paper.searcher.searcher.settings.epsilon_horizon is None


def test_early_stopping_emerald_spends_the_epoch_budget() -> None:
    from service.core.api import Budget

    budget = Budget(trials=12, epochs=4)
    stopping = plans.build("emerald", space=SPACE, metric="val_acc", mode="max", seed=0,
                              budget=budget)
    assert stopping.multi_fidelity and stopping.epoch_budget == 48
    assert stopping.num_samples >= 48  # trials enough for every epoch to be spent
    plain = plans.build("emerald", space=SPACE, metric="val_acc", mode="max", seed=0,
                           budget=budget, options={"early_stopping": False})
    assert not plain.multi_fidelity and plain.num_samples == 12


def test_schedule_options_set_with_another_schedule_are_refused() -> None:
    from service.core.api import Budget
    from service.core.registry import RegistryError

    with pytest.raises(RegistryError, match="add epsilon: decay"):
        plans.build("emerald", space=SPACE, metric="val_acc", mode="max", seed=0,
                       budget=Budget(), options={"epsilon_decay": 0.3})


def test_variant_paper_sets_the_papers_settings_where_options_are_at_default() -> None:
    from service.core.api import Budget

    def settings(name: str, **options):
        plan = plans.build(name, space=SPACE, metric="val_acc", mode="max", seed=0,
                              budget=Budget(trials=12, epochs=4), options=options)
        if name == "emerald":
            return plan, plan.searcher.searcher.settings
        return plan, EmeraldSettings.from_options(**plan.controller_options)

    plan, ours = settings("emerald")
    assert (ours.aug_actions, ours.epsilon_horizon is not None, ours.rewards.acc_scale,
            ours.rewards.low_acc_penalty) == ("table4", True, 1.0, 0.0)
    assert settings("emerald", aug_actions="combinations")[1].aug_actions == "combinations"
    plan, paper = settings("emerald", variant="paper")
    assert paper.aug_actions == "table4" and paper.epsilon_horizon is None
    assert paper.epsilon_decay == 0.01 and paper.rewards.acc_scale == 100.0
    assert (paper.rewards.low_acc_floor, paper.rewards.low_acc_penalty) == (0.5, 1.0)
    assert plan.multi_fidelity  # 5.1.2's early stopping
    assert plan.searcher.searcher.agents.actions.sizes["aug"] == 5  # none/flip/3 rotations
    # an option given at another value than its default wins over the variant
    _, mixed = settings("emerald", variant="paper", epsilon="adaptive", w1=0.8)
    assert mixed.epsilon_lambda is not None and mixed.rewards.weights == (0.8, 0.5)
    plan, dynamic = settings("emerald-dynamic", variant="paper")
    assert dynamic.aug_actions == "table4" and plan.multi_fidelity and plan.patience == 3
    plan, fresh = settings("emerald-dynamic")
    assert not plan.multi_fidelity and plan.patience == 0
    assert fresh.aug_actions == "combinations"  # emerald's table4 default is its own


def test_the_continuous_rate_head_proposes_rates_off_the_bins_and_restores(tmp_path) -> None:
    """lr_head: continuous puts Agent 2 on SAC (its own learner), Agent 1 stays on DQN."""
    settings = EmeraldSettings(lr_head="continuous", epsilon_decay=0.03)
    first = EmeraldSearch(SPACE, seed=2, settings=settings, max_epochs=3)
    run(first, 12, 2)
    bins = {c["lr"] for c in first.actions.opt}
    rates = [row["config_lr"] for row in first.log]
    assert all(1e-5 <= r <= 1e-1 for r in rates) and not set(rates) <= bins
    assert {row["config_optimizer"] for row in first.log} <= {"adam", "sgd", "rmsprop"}
    assert len(first.log[0]["action_opt"].split()) == 4  # 3 optimizer scores + the log rate
    path = str(tmp_path / "state.pkl")
    first.save(path)
    second = EmeraldSearch(SPACE, seed=9, settings=settings, max_epochs=3)
    second.restore(path)
    assert second.greedy_config() == first.greedy_config()
    assert [second.suggest(f"n{i}") for i in range(3)] == [first.suggest(f"n{i}")
                                                           for i in range(3)]
