"""HYPERA, HYPERA: one RLlib SAC agent per hyperparameter group (architecture,
optimization, regularization, data, loss) proposing continuous deltas, and a coordinator
that merges them (`rllib_policies.hypera._core`).

Two views of one `Hypera` core:

- `HyperaController` (entry `hypera`), an in-trial `Controller`: a trial starts from the
  incumbent (the best finished trial's final hyperparameters; a random point for the first
  `random_starts` trials), the architecture agent's proposal seeds the new trial's config
  (a running model cannot change), and every other agent moves its group inside the running
  trial every N epochs (HYPERA's "update frequency": data 3, optimization 5, loss 5,
  regularization 7; architecture 10, at the next trial start).
- `HyperaSearch` (entry `hypera-search`), a plain searcher: each trial is the incumbent plus
  every agent's delta, one decision per trial.

Reward (HYPERA gives none; our choice, as the issue asks): the validation-accuracy
gain between an agent's decision and its next one (or the trial's end), in points
(`reward_scale` 100 per unit accuracy). A decision at a trial's start is measured against
the incumbent at the same epoch, the architecture agent's against the incumbent's final
accuracy. EMERALD-O's failure penalties (rllib_policies.exploration: `FAILURE_REWARD` for a
diverged or failed step, `EARLY_STOP_PENALTY` for a trial stopped before its budget) on the
same scale.

State of every agent: the normalised positions of all searched dimensions, validation and
training accuracy and loss over the last three epochs, log gradient norm and its spread
over the batches, log epoch seconds, and the trial's progress.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rllib_policies.exploration import EARLY_STOP_PENALTY, FAILURE_REWARD
from rllib_policies.hypera._core import (
    GROUPS,
    HyperaSettings,
    Proposal,
    agent_configs,
    apply_in_sequence,
    best_combination,
    config_at,
    groups_of,
    merge,
    parse_groups,
    position,
    ungrouped,
)
from service.backends.tune.searching import StateSearcher, is_failure
from service.core.api import Observation
from service.core.space import SearchSpace

"""EMERALD-O 5.1.2's penalty for a stopped trial (accuracy scale)."""
HISTORY = 3
"""Epochs of metrics in the state."""
LOSS_CAP = 10.0
"""Losses enter the state as min(loss, 10) / 10."""
ARCHITECTURE = "architecture"


@dataclass
class _Open:
    """An agent's decision waiting for its reward."""

    obs: np.ndarray
    decision: Any
    epoch: int
    step: int


@dataclass
class _Trial:
    positions: dict[str, float]
    base: dict[str, Any] | None  # the incumbent it started from (history, score)
    rows: list[dict[str, Any]] = field(default_factory=list)
    history: list[float] = field(default_factory=list)
    open: dict[str, _Open] = field(default_factory=dict)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class Hypera:
    """The five agents (those whose group the space searches) and their coordinator."""

    def __init__(self, space: SearchSpace, settings: HyperaSettings, *, seed: int = 0,
                 metric: str = "val_acc", mode: str = "max",
                 groups: dict[str, list[str]] | None = None) -> None:
        from rllib_policies.agents import (
            AgentSpec,
            LearnerSettings,
            make_learner,
        )

        self.space, self.settings, self.metric = space, settings, metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.groups = groups_of(space, groups)
        loose = ungrouped(space, groups)
        if loose or not self.groups:
            raise ValueError(
                f"HYPERA's agents manage {', '.join(GROUPS)} hyperparameters; "
                + (f"{', '.join(loose)} belong to none (leave them constant, or give "
                   "groups={group: [names]})" if loose
                   else "the space searches none of them"))
        self.dims = {d.name: d for d in space.searched}
        self.order = [d.name for d in space.searched]
        self.rng = np.random.default_rng(seed)
        obs_dim = len(self._state({n: 0.0 for n in self.order}, [], 0, 1))
        self.learner = make_learner(
            {g: AgentSpec(obs_dim=obs_dim, action_dim=len(names),
                          temperature=settings.agents[g].temperature)
             for g, names in self.groups.items()},
            LearnerSettings(algo="sac", hidden=settings.hidden, lr=settings.lr,
                            gamma=settings.gamma, batch_size=settings.batch_size,
                            replay_capacity=settings.replay_capacity,
                            learning_starts=settings.learning_starts,
                            updates_per_step=settings.updates_per_step,
                            target_tau=settings.tau, seed=seed))
        self.trials: dict[str, _Trial] = {}
        self.incumbent: dict[str, Any] | None = None
        self.started = 0
        self.steps = 0  # decisions taken (each numbered when taken)
        self.arch_epochs = math.inf  # epochs trained since the architecture agent acted
        self.log: list[dict[str, Any]] = []
        self.unlearned: list[dict[str, Any]] = []

    # What agents see and how their moves combine.

    def _state(self, positions: dict[str, float], rows: list[dict[str, Any]], epoch: int,
               max_epochs: int) -> np.ndarray:
        values = [positions[n] for n in self.order]
        recent = rows[-HISTORY:]
        for i in range(HISTORY):
            row = recent[i - len(recent)] if i < len(recent) else {}
            for key in ("val_acc", "train_acc"):
                values.append(_finite(row.get(key)) or 0.0)
            for key in ("val_loss", "train_loss"):
                loss = _finite(row.get(key))
                values.append(min(loss, LOSS_CAP) / LOSS_CAP if loss is not None else 0.0)
        last = recent[-1] if recent else {}
        for key in ("grad_norm", "grad_norm_std", "epoch_time_s"):
            x = _finite(last.get(key))
            values.append(math.log10(1.0 + max(0.0, x)) if x is not None else 0.0)
        values.append(epoch / max(1, max_epochs))
        return np.asarray(values, dtype=np.float32)

    def _deltas(self, agent: str, action: np.ndarray) -> dict[str, float]:
        return {n: float(a) for n, a in zip(self.groups[agent], action, strict=True)}

    def _proposal(self, agent: str, obs: np.ndarray, decision: Any) -> Proposal:
        q1, q2 = self.learner.q_values(agent, obs, decision.action[None, :])
        return Proposal(agent, self._deltas(agent, decision.action), (q1[0], q2[0]))

    def _scales(self) -> dict[str, float]:
        return {g: self.settings.agents[g].scale for g in self.groups}

    def _coordinate(self, trial: _Trial, acting: list[str], epoch: int, max_epochs: int
                    ) -> dict[str, tuple[np.ndarray, Any]]:
        """Move `trial.positions` by the acting agents' proposals under the strategy;
        returns each agent's (observation, decision) for its transition."""
        s = self.settings
        scales = self._scales()
        acting = [g for g in GROUPS if g in acting]
        obs = self._state(trial.positions, trial.rows, epoch, max_epochs)
        if s.strategy == "sequential":
            taken: dict[str, tuple[np.ndarray, Any]] = {}
            for agent in acting:
                own = self._state(trial.positions, trial.rows, epoch, max_epochs)
                decision = self.learner.act({agent: own}, epsilon=0.0, rng=self.rng)[agent]
                trial.positions = apply_in_sequence(
                    trial.positions, [Proposal(agent, self._deltas(agent, decision.action))],
                    scales)
                taken[agent] = (own, decision)
            return taken
        if s.strategy == "independent" or len(acting) < 2:
            decisions = self.learner.act({a: obs for a in acting}, epsilon=0.0, rng=self.rng)
        else:  # cooperative: the best of `candidates` joint draws by the critics' sum
            draws = [self.learner.act({a: obs for a in acting}, epsilon=0.0, rng=self.rng)
                     for _ in range(max(1, s.candidates))]
            scores = np.zeros((len(draws), len(acting)))
            for c, draw in enumerate(draws):
                for i, agent in enumerate(acting):
                    others = [Proposal(a, self._deltas(a, draw[a].action)) for a in acting
                              if a != agent]
                    seen = apply_in_sequence(trial.positions, others, scales)
                    q1, q2 = self.learner.q_values(
                        agent, self._state(seen, trial.rows, epoch, max_epochs),
                        draw[agent].action[None, :])
                    scores[c, i] = min(q1[0], q2[0])
            decisions = draws[best_combination(scores, [1.0] * len(acting))]
        proposals = [self._proposal(a, obs, decisions[a]) for a in acting]
        trial.positions, _ = merge(trial.positions, proposals, scales, s.conflict, self.rng)
        return {a: (obs, decisions[a]) for a in acting}

    # Trials.

    def start(self, trial_id: str, max_epochs: int, *, in_trial: bool) -> dict[str, Any]:
        """A new trial's config: the incumbent moved by the agents acting at a trial start
        (all of them as a searcher; in a trial, the architecture agent when due and every
        agent acting at epoch 0), or a random point while `random_starts` last."""
        self.started += 1
        base = self.incumbent if self.started > self.settings.random_starts else None
        if base is None:
            sample = self.space.sample(self.rng)
            positions = {n: position(self.dims[n], sample[n]) for n in self.order}
            trial = self.trials[trial_id] = _Trial(positions, None)
            return config_at(self.space, trial.positions)
        trial = self.trials[trial_id] = _Trial(dict(base["positions"]), base,
                                               list(base["rows"]))
        acting = list(self.groups)
        if in_trial and ARCHITECTURE in acting and \
                self.arch_epochs < self.settings.agents[ARCHITECTURE].every:
            acting.remove(ARCHITECTURE)
        if ARCHITECTURE in acting:
            self.arch_epochs = 0
        for agent, (obs, decision) in self._coordinate(trial, acting, 0, max_epochs).items():
            trial.open[agent] = _Open(obs, decision, 0, self._next_step())
        trial.rows = []  # the incumbent's rows were the start's state; the trial's own follow
        return config_at(self.space, trial.positions)

    def _next_step(self) -> int:
        self.steps += 1
        return self.steps

    def _baseline(self, trial: _Trial, step: _Open, agent: str, epoch: int) -> float | None:
        """What the step's gain is measured from: the accuracy when it was taken, or for a
        trial-start decision the incumbent's at the same epoch (its final accuracy for the
        architecture agent)."""
        if step.epoch > 0:
            value = trial.history[step.epoch - 1] if len(trial.history) >= step.epoch \
                else None
        elif trial.base is None:
            value = None
        elif agent == ARCHITECTURE:
            value = trial.base["score"]
        else:
            history = trial.base["history"]
            value = history[min(epoch, len(history)) - 1] if history else None
        return _finite(value)

    def _close(self, trial_id: str, trial: _Trial, agent: str, epoch: int, max_epochs: int,
               *, terminal: bool, failed: bool, stopped: bool = False) -> None:
        step = trial.open.pop(agent)
        now = _finite(trial.history[-1]) if trial.history else None
        baseline = self._baseline(trial, step, agent, epoch)
        scale = self.settings.reward_scale
        if failed:
            reward = FAILURE_REWARD * scale
        else:
            if now is None or baseline is None:
                return  # no measure of this decision: nothing to learn from
            reward = self.sign * (now - baseline) * scale
            if stopped:
                reward -= EARLY_STOP_PENALTY * scale
        after = self._state(trial.positions, trial.rows, epoch, max_epochs)
        done = terminal or failed
        self.learner.observe({agent: step.obs}, {agent: step.decision}, reward,
                             {agent: after}, terminated=done)
        row = {"step": step.step, "trial_id": trial_id, "agent": agent, "epoch": step.epoch,
               "closed_epoch": epoch, "reward": reward, "failed": failed, "terminal": done,
               "action": " ".join(f"{a:.3f}" for a in step.decision.action),
               "alpha": self.learner.temperature(agent),
               "state": " ".join(f"{x:.4g}" for x in step.obs)}
        self.log.append(row)
        self.unlearned.append(row)

    def _record(self, trial: _Trial, rows: list[dict[str, Any]]) -> bool:
        """Add a trial's new epoch rows; whether one of them failed."""
        failed = False
        for row in rows:
            trial.rows.append(row)
            value = _finite(row.get(self.metric))
            failed = failed or is_failure(row, self.metric)
            trial.history.append(value if value is not None else math.nan)
        return failed

    def step(self, trial_id: str, rows: list[dict[str, Any]], epoch: int, max_epochs: int
             ) -> dict[str, Any]:
        """In a trial: record the epochs since the last decision; the agents due at this
        epoch close their previous decision and move their group. Returns the searched
        dimensions the trial may change (all but the architecture's)."""
        trial = self.trials[trial_id]
        if self._record(trial, rows):
            for agent in list(trial.open):
                self._close(trial_id, trial, agent, epoch, max_epochs, terminal=True,
                            failed=True)
        else:
            due = [g for g in self.groups if g != ARCHITECTURE
                   and epoch % self.settings.agents[g].every == 0]
            for agent in due:
                if agent in trial.open:
                    self._close(trial_id, trial, agent, epoch, max_epochs, terminal=False,
                                failed=False)
            if due:
                taken = self._coordinate(trial, due, epoch, max_epochs)
                for agent, (obs, decision) in taken.items():
                    trial.open[agent] = _Open(obs, decision, epoch, self._next_step())
        return self.trial_config(trial_id)

    def trial_config(self, trial_id: str) -> dict[str, Any]:
        """The trial's current values of every searched dimension but the architecture's."""
        arch = set(self.groups.get(ARCHITECTURE, ()))
        config = config_at(self.space, self.trials[trial_id].positions)
        return {k: v for k, v in config.items() if k not in arch}

    def finish(self, trial_id: str, rows: list[dict[str, Any]], epoch: int, max_epochs: int
               ) -> None:
        """The trial ended: every open decision closes (terminal); the trial may become
        the incumbent; the architecture agent's clock advances by its epochs."""
        trial = self.trials.pop(trial_id, None)
        if trial is None:
            return
        failed = self._record(trial, rows) or not trial.history
        stopped = not failed and 0 < len(trial.history) < max_epochs
        for agent in list(trial.open):
            self._close(trial_id, trial, agent, epoch, max_epochs, terminal=True,
                        failed=failed, stopped=stopped)
        if self.arch_epochs != math.inf:
            self.arch_epochs += len(trial.history)
        score = trial.history[-1] if trial.history else math.nan
        if failed or not math.isfinite(score):
            return
        if self.incumbent is None or self.sign * score > self.sign * self.incumbent["score"]:
            self.incumbent = {"positions": dict(trial.positions), "score": score,
                              "history": list(trial.history),
                              "rows": [{k: r.get(k) for k in _STATE_KEYS}
                                       for r in trial.rows[-HISTORY:]]}

    def learn(self) -> dict[str, float]:
        """One SAC update (of every agent with data) per closed decision."""
        metrics: dict[str, float] = {}
        for row in self.unlearned:
            start = time.perf_counter()
            metrics = self.learner.update()
            row["update_s"] = time.perf_counter() - start
            row.update({f"learner_{k}": v for k, v in metrics.items()})
        self.unlearned = []
        return metrics

    def get_state(self) -> dict[str, Any]:
        return {"learner": self.learner.get_state(), "trials": copy.deepcopy(self.trials),
                "incumbent": copy.deepcopy(self.incumbent), "started": self.started,
                "steps": self.steps,
                "arch_epochs": self.arch_epochs, "log": copy.deepcopy(self.log),
                "unlearned": [row["step"] for row in self.unlearned],
                "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.learner.set_state(state["learner"])
        self.trials = copy.deepcopy(state["trials"])
        self.incumbent = copy.deepcopy(state["incumbent"])
        self.started = int(state["started"])
        self.steps = int(state["steps"])
        self.arch_epochs = float(state["arch_epochs"])
        self.log = copy.deepcopy(state["log"])
        owed = set(state["unlearned"])
        self.unlearned = [row for row in self.log if row["step"] in owed]
        self.rng.bit_generator.state = state["rng"]


_STATE_KEYS = ("val_acc", "train_acc", "val_loss", "train_loss", "grad_norm",
               "grad_norm_std", "epoch_time_s")


def hypera_settings(*, strategy: str, conflict: str, scales: str, temperatures: str,
                    every: str, candidates: int, random_starts: int, reward_scale: float,
                    lr: float, batch_size: int, replay_capacity: int, learning_starts: int,
                    updates_per_step: int) -> HyperaSettings:
    """The settings of the entries' options."""
    return HyperaSettings(strategy=strategy, conflict=conflict,
                          agents=agent_configs(scales, temperatures, every),
                          candidates=candidates, random_starts=random_starts,
                          reward_scale=reward_scale, lr=lr, batch_size=batch_size,
                          replay_capacity=replay_capacity, learning_starts=learning_starts,
                          updates_per_step=updates_per_step)


class HyperaController:
    """Entry `hypera`: HYPERA's agents inside running trials (a `Controller`)."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, groups: str = "",
                 **options: Any) -> None:
        self.core = Hypera(space, hypera_settings(**options), seed=seed,
                           groups=parse_groups(groups))

    def propose(self, trial_id: str, max_epochs: int = 1) -> dict[str, Any]:
        """A new trial's starting config (the architecture agent acts here)."""
        return self.core.start(trial_id, max_epochs, in_trial=True)

    def decide(self, obs: Observation) -> dict[str, Any]:
        if obs.trial_id not in self.core.trials:
            self.core.start(obs.trial_id, obs.max_epochs, in_trial=True)
        if obs.epoch == 0 and not obs.rows:
            return self.core.trial_config(obs.trial_id)
        return self.core.step(obs.trial_id, obs.rows, obs.epoch, obs.max_epochs)

    def finish(self, obs: Observation) -> None:
        self.core.finish(obs.trial_id, obs.rows, obs.epoch, obs.max_epochs)

    def learn(self) -> dict[str, float]:
        return self.core.learn()

    def step_log(self, start: int = 0) -> list[dict[str, Any]]:
        return self.core.log[start:]

    def get_state(self) -> dict[str, Any]:
        return self.core.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.core.set_state(state)




def _option_defaults() -> dict[str, Any]:
    """The entries' option defaults (one definition), for a searcher built directly."""
    from rllib_policies.hypera.entries import _hypera_options

    return {name: option.default for name, option in _hypera_options().items()}


class HyperaSearch(StateSearcher):
    """Entry `hypera-search`: each trial is the incumbent plus every agent's delta; one
    decision per agent per trial, rewarded by the trial's final gain over the incumbent
    (the agents' `every` does not apply). As a drop-in searcher of a user's own Tuner,
    `groups={"optimization": ["my_lr"], ...}` says which agent manages which name."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, max_epochs: int = 1,
                 metric: str | None = None, mode: str | None = None,
                 groups: dict[str, list[str]] | str | None = None, **options: Any) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.max_epochs = max_epochs
        if isinstance(groups, str):  # the entry's option
            groups = parse_groups(groups)
        options = {k: v for k, v in {**_option_defaults(), **options}.items() if k != "groups"}
        self.core = Hypera(space, hypera_settings(**options),
                           seed=seed, metric=metric or "val_acc", mode=mode or "max",
                           groups=groups)
        self._constants = {d.name: d.choices[0] for d in space.dims if d.is_constant}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = self.core.start(trial_id, self.max_epochs, in_trial=False)
        return {**self._constants, **config}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        rows = [] if error or not result else [{**result, "val_acc": result.get(
            self.core.metric)}]
        epochs = int(result.get("training_iteration", self.max_epochs)) if result else 0
        trial = self.core.trials.get(trial_id)
        if trial is not None and rows:  # the final result stands for the whole trial
            trial.history = [math.nan] * max(0, epochs - 1)
        self.core.finish(trial_id, rows, epochs, self.max_epochs)
        self.core.learn()

    def get_state(self) -> dict[str, Any]:
        return {"core": self.core.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.core.set_state(state["core"])
