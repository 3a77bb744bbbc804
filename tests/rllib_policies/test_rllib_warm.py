"""Warm start of EMERALD-O's agents (rllib_policies/emerald/_warm.py) and `python -m service
pretrain`: the file carries the weights and nothing else, a warm-started search starts its
own exploration with a fresh buffer, and every unusable file is refused in one line."""

from __future__ import annotations

import dataclasses
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rllib_policies import EmeraldSearch, EmeraldSettings
from rllib_policies.emerald._encoding import WARM_EPSILON_START, ActionSet
from rllib_policies.emerald._warm import AGENTS_FILE, WarmStartError, find_agents_file, load_agents
from service.core.config import ConfigError, build_config
from service.core.space import SearchSpace
from tests.backends.replay.tables import emerald_table
from tests.rllib_policies.test_rllib_search import FAST, SPACE, run

ROOT = Path(__file__).resolve().parents[2]


def _trained(tmp_path: Path, steps: int = 40) -> tuple[EmeraldSearch, Path]:
    searcher = EmeraldSearch(SPACE, seed=3, settings=FAST, max_epochs=3)
    run(searcher, steps, 3)
    tmp_path.mkdir(parents=True, exist_ok=True)
    searcher.save(str(tmp_path / "searcher-state.pkl"))  # as Tune does, in the cell folder
    return searcher, tmp_path / AGENTS_FILE


def _q(searcher: EmeraldSearch) -> dict[str, list[float]]:
    obs = searcher.agents.encode(searcher._state)
    return {k: list(np.round(d.extra["q_values"], 6))
            for k, d in searcher.learner.act(obs, epsilon=0.0,
                                             rng=np.random.default_rng(0)).items()}


def test_a_warm_start_loads_the_weights_and_resets_exploration(tmp_path: Path) -> None:
    first, file = _trained(tmp_path)
    assert file.exists() and find_agents_file(tmp_path) == file
    warm = EmeraldSearch(SPACE, seed=11, max_epochs=3, settings=dataclasses.replace(
        FAST, warm_start=str(tmp_path), epsilon_start=WARM_EPSILON_START))
    # the same networks: the same Q-values and greedy choice on the same state
    warm._state = first._state
    assert _q(warm) == _q(first)
    assert warm.greedy_config() == first.greedy_config()
    # nothing else came along: no steps, no buffer, exploration from its start
    assert warm.agents.steps == 0 and warm.learner.replay_size == 0 and warm.log == []
    assert warm.epsilon == pytest.approx(WARM_EPSILON_START)
    assert first.learner.replay_size > 0 and first.agents.steps == 40
    fresh = EmeraldSearch(SPACE, seed=11, settings=FAST, max_epochs=3)
    fresh._state = first._state
    assert _q(fresh) != _q(first)
    # a warm-started search keeps learning, and its own file names where it came from
    run(warm, 10, 4)
    (tmp_path / "again").mkdir()
    warm.save(str(tmp_path / "again" / "searcher-state.pkl"))
    payload = load_agents(tmp_path / "again" / AGENTS_FILE)
    assert payload["source"]["warm_from"]["file"] == str(tmp_path)
    assert payload["source"]["decisions"] == 10


def test_the_options_resolve_the_start_of_exploration() -> None:
    assert EmeraldSettings.from_options().epsilon_start == 1.0
    assert EmeraldSettings.from_options(warm_start="x.pkl").epsilon_start == WARM_EPSILON_START
    assert EmeraldSettings.from_options(warm_start="x.pkl", epsilon_start=1.0
                                        ).epsilon_start == 1.0


def test_unusable_files_are_refused_in_one_line(tmp_path: Path) -> None:
    _, file = _trained(tmp_path / "a", steps=8)
    actions = ActionSet.from_space(SPACE)
    assert load_agents(file, actions, algo="dqn", hidden=FAST.hidden)["kind"]
    other = ActionSet.from_space(SearchSpace.from_dict({
        "flip": [False, True], "optimizer": ["adam", "sgd"], "lr": {"loguniform": [1e-5, 1e-1]}}))
    cases = [
        (lambda: load_agents(tmp_path / "missing.pkl"), "does not exist"),
        (lambda: load_agents(tmp_path / "a", other), "was learned on other actions"),
        (lambda: load_agents(file, actions, algo="ppo"), "set algo: dqn"),
        (lambda: load_agents(file, actions, hidden=(8,)), "hidden layers"),
    ]
    continuous = EmeraldSearch(SPACE, seed=1, max_epochs=3, settings=dataclasses.replace(
        FAST, lr_head="continuous"))
    continuous.agents.save_agents(tmp_path / "sac.pkl", {})
    cases.append((lambda: load_agents(tmp_path / "sac.pkl", actions, algo="dqn"),
                  "holds dqn\\+sac-lr agents"))
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    cases.append((lambda: load_agents(tmp_path / "junk.pkl"), "cannot be read"))
    (tmp_path / "dict.pkl").write_bytes(pickle.dumps({"kind": "other"}))
    cases.append((lambda: load_agents(tmp_path / "dict.pkl"), "not an EMERALD-O agents file"))
    _trained(tmp_path / "b", steps=8)
    cases.append((lambda: load_agents(tmp_path), "holds 2 agent files"))
    (tmp_path / "empty").mkdir()
    cases.append((lambda: load_agents(tmp_path / "empty"), "holds no emerald-agents.pkl"))
    for call, message in cases:
        with pytest.raises(WarmStartError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


def test_the_config_check_refuses_a_bad_warm_start_before_ray(tmp_path: Path) -> None:
    raw = {"name": "w", "storage": str(tmp_path), "searchers": ["emerald", "emerald-dynamic"],
           "dataset": {"name": "digits"}}
    for name in ("emerald", "emerald-dynamic"):
        with pytest.raises(ConfigError, match="warm_start: .* does not exist"):
            build_config({**raw, "searcher_options": {name: {"warm_start": "/nope"}}})


def test_pretrain_writes_a_file_a_search_can_start_from(tmp_path: Path) -> None:
    table = emerald_table(tmp_path / "t.parquet")
    out = tmp_path / "agents.pkl"
    cmd = [sys.executable, "-m", "service", "pretrain", "--table", str(table), "--episodes",
           "2", "--trials", "4", "--epochs", "6", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "episode 2/2" in done.stdout
    payload = load_agents(out)
    assert payload["source"]["episodes"] == 2 and payload["source"]["pretrain"] == [
        "t.parquet"]
    assert payload["source"]["warm_from"]["episodes"] == 1  # episode 2 was warm
    assert out.with_suffix(".json").exists()
    from service.backends.replay.simulate import replay_cell
    from service.core.api import Budget
    from service.core.table import cached_table

    sim = replay_cell("emerald", cached_table(str(table)), seed=5,
                      budget=Budget(trials=4, epochs=6), options={"warm_start": str(out)})
    assert sim.plan.searcher.searcher.agents.warm_source["file"] == str(out)
    for bad, message in ((["--episodes", "0"], "--episodes: 0 must be at least 1"),
                         (["--option", "algo=sac"], "--option: .*algo"),
                         (["--option", f"warm_start={out}"], "--option warm_start")):
        done = subprocess.run([*cmd, *bad], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and re.search(message, done.stderr)
