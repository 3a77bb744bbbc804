"""`emerald`: EMERALD-O's two agents as a Ray Tune Searcher.

Each trial is one step with a fixed configuration: `suggest` lets both policies act on the
current state, `on_trial_complete` turns the trial's result into the shared reward and
updates the RLlib learner. The state's moving averages come from completed trials, in the
order they complete (asynchronous under concurrency). Everything - learner weights and
optimizer state, replay buffer, counters, RNG, pending steps - is part of save/restore.

Built without a space it is a drop-in searcher of a user's own `tune.Tuner`: the space comes
from Tune's param_space in `set_search_properties`, each searched name playing one of the
agents' roles (`ROLES`: its own name, or the user's `names` mapping says which).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from rllib_policies.emerald._encoding import AUG_FLAGS, EmeraldSettings, TrainingState
from rllib_policies.emerald._steps import AgentSteps
from rllib_policies.emerald._warm import AGENTS_FILE
from service.backends.tune.searching import write_log, write_tensorboard
from service.core.layout import STEP_LOG, STEP_TB
from service.core.space import Dim, SearchSpace, SpaceError

ROLES: tuple[str, ...] = (*AUG_FLAGS, "optimizer", "lr")
"""What a dimension can be to EMERALD-O's agents: one of Table 3's augmentation slots
(Agent 1 chooses it), the optimizer or the learning rate (Agent 2 chooses them)."""

_ROLE_HELP = ("augmentation: flip, rotation, zoom, shift (Agent 1); optimizer, lr "
              "(Agent 2)")


def _named(user: str, raw: Any, role: str) -> Dim | None:
    """The dimension `role` of the user's param_space entry `raw`: a constant for a plain
    value, None for a Tune domain (read by `from_tune`)."""
    from ray.tune.search import sample

    if isinstance(raw, sample.Domain):
        return None
    if isinstance(raw, (bool, int, float, str)):
        return Dim(role, "constant", (raw,))
    raise SpaceError(f"param_space.{user}: {raw!r} is no value EMERALD-O can use as its "
                     f"{role}; give a plain value or a tune.choice / uniform / loguniform")


def roles_space(param_space: Mapping[str, Any], names: Mapping[str, str] | None = None
                ) -> tuple[SearchSpace, dict[str, str]]:
    """A Tune param_space as the agents' space, in role names, and each role's name in the
    user's space. `names` maps the user's names to `ROLES` where they differ; every searched
    name needs a role, and both agents need something to choose (EMERALD-O section 3).
    Raises SpaceError in one line naming what is missing and the fix."""
    from service.backends.tune.spaces import from_tune

    names = dict(names or {})
    for user, role in names.items():
        if user not in param_space:
            raise SpaceError(f"EmeraldSearch names: {user!r} is not in the param_space (its "
                             f"keys: {', '.join(map(str, param_space)) or 'none'})")
        if role not in ROLES:
            raise SpaceError(f"EmeraldSearch names: {user!r} -> {role!r} is no role; roles "
                             f"are {_ROLE_HELP}")
    role_of = {user: names.get(user, user) for user in param_space
               if user in names or user in ROLES}
    taken: dict[str, str] = {}
    for user, role in role_of.items():
        if role in taken:
            raise SpaceError(f"EmeraldSearch names: {taken[role]!r} and {user!r} both play "
                             f"{role!r}; give each role one name")
        taken[role] = user
    searched = from_tune(param_space)
    loose = [d.name for d in searched.dims if d.name not in role_of]
    if loose:
        raise SpaceError(
            f"EmeraldSearch: {', '.join(map(repr, loose))} have no role for EMERALD-O's "
            f"agents ({_ROLE_HELP}); give each a role, e.g. names={{{loose[0]!r}: 'lr'}}, "
            f"make them constants, or use another searcher")
    dims: list[Dim] = []
    for user, role in role_of.items():
        dim = _named(user, param_space[user], role)
        if dim is None:
            found = searched[user]
            dim = Dim(role, found.kind, found.choices, found.low, found.high)
        dims.append(dim)
    space = SearchSpace(tuple(dims))
    _check_roles(space)
    return space, {role: user for user, role in role_of.items()}


def _check_roles(space: SearchSpace) -> None:
    """Both agents have something to choose, and the optimizer and rate are of a kind
    Agent 2 can act on (a choice of names; a positive range or a choice of rates)."""
    searched = {d.name: d for d in space.searched}
    opt, lr = searched.get("optimizer"), searched.get("lr")
    if opt is None and lr is None:
        raise SpaceError(
            "EmeraldSearch: the param_space has no optimizer or learning rate for EMERALD-O's "
            "optimizer agent; add tune.loguniform 'lr' / tune.choice 'optimizer', or name "
            "yours, e.g. names={'learning_rate': 'lr', 'opt': 'optimizer'}")
    if not any(name in searched for name in AUG_FLAGS):
        raise SpaceError(
            "EmeraldSearch: the param_space has no augmentation dimension for EMERALD-O's "
            f"augmentation agent ({', '.join(AUG_FLAGS)}); add one, or name yours, e.g. "
            "names={'hflip': 'flip'}")
    if opt is not None and opt.kind != "choice":
        raise SpaceError("EmeraldSearch: the optimizer must be a tune.choice of names "
                         f"(got a {opt.kind} range)")
    if lr is not None and (lr.kind == "int" or (lr.kind == "choice" and not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for v in lr.choices)) or (lr.kind != "choice" and lr.low <= 0)):
        raise SpaceError("EmeraldSearch: the learning rate must be a tune.loguniform or "
                         "tune.uniform above 0, or a tune.choice of positive rates")


class EmeraldSearch(Searcher):
    """Two cooperating RL agents (augmentation; optimizer and learning rate) proposing one
    configuration per trial and learning from the shared reward."""

    def __init__(self, space: SearchSpace | None = None, *, metric: str | None = None,
                 mode: str | None = None, seed: int = 0,
                 settings: EmeraldSettings | None = None, max_epochs: int | None = None,
                 log_path: str | None = None, names: Mapping[str, str] | None = None,
                 loss_metric: str = "train_loss") -> None:
        """With `space` (the service's runs) the agents are built now and learn from the
        results' `val_acc` and `train_loss`. Without it (a user's own Tuner) they are built
        in `set_search_properties` from Tune's param_space; `names` maps the user's names to
        `ROLES`, the reward reads the Tuner's metric (negated under mode min) and
        `loss_metric` (the metric again, as a loss, where a result lacks it)."""
        if space is not None:
            metric, mode = metric or "val_acc", mode or "max"
        super().__init__(metric=metric, mode=mode)
        self.settings = settings or EmeraldSettings()
        self._seed = seed
        self._max_epochs = max_epochs
        self._log_path = log_path
        self._tb_written = 0
        self._names = dict(names or {})
        self._loss_metric = loss_metric
        self._users: dict[str, str] | None = None  # role -> the user's name (drop-in only)
        self._searched: tuple[str, ...] = ()
        if space is not None:
            self._build(space)

    def _build(self, space: SearchSpace) -> None:
        self.agents = AgentSteps(space, self.settings, seed=self._seed, gamma=0.0)
        self.actions = self.agents.actions
        self.learner = self.agents.learner
        self._state = self.agents.initial_state()

    def _built(self) -> AgentSteps:
        if not hasattr(self, "agents"):
            raise RuntimeError("EmeraldSearch was built without a space and has not had "
                               "Tune's param_space yet: pass it as a Tuner's search_alg, or "
                               "call set_search_properties(metric, mode, param_space)")
        return self.agents

    @property
    def log(self) -> list[dict[str, Any]]:
        return self.agents.log

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        if not hasattr(self, "agents"):  # a user's own Tuner: the space is its param_space
            space, users = roles_space(config, self._names)
            self._drop_in(space, users)
        return True

    def _drop_in(self, space: SearchSpace, users: dict[str, str]) -> None:
        """The agents on `space` (role names), answering in the user's names `users`."""
        self._users, self._roles = users, space
        self._searched = tuple(d.name for d in space.searched)
        self._build(space)

    def _to_user(self, config: dict[str, Any]) -> dict[str, Any]:
        """A suggestion in the user's names, without the constants Tune merges itself."""
        if self._users is None:
            return config
        return {self._users[k]: v for k, v in config.items() if k in self._searched}

    def _to_agents(self, result: dict | None) -> dict | None:
        """A user's result as the reward reads it: the metric as `val_acc` (higher is
        better) and `loss_metric` as `train_loss`."""
        if self._users is None or not result:
            return result
        sign = -1.0 if self.mode == "min" else 1.0
        value = sign * float(result[self.metric])
        loss = result.get(self._loss_metric)
        return {**result, "val_acc": value,
                "train_loss": -value if loss is None else float(loss)}

    @property
    def epsilon(self) -> float:
        return self.agents.epsilon

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        return self._to_user(self._built().open(trial_id, self._state))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.agents.note_grad_norm(trial_id, result.get("grad_norm"))

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        value = (result or {}).get(self.metric)
        failed = error or value is None or not math.isfinite(float(value)) or bool(
            (result or {}).get("diverged"))
        epochs = int((result or {}).get("training_iteration", 0) or 0)
        early = (not failed and self._max_epochs is not None and 0 < epochs < self._max_epochs)
        if not failed:
            result = self._to_agents(result)
        after = self.agents.close(trial_id, self._state, result, failed=failed,
                                  terminated=True, early_stopped=early)
        if after is None:
            return
        self._state = after
        # The searcher runs in Tune's driver, not on a trial's path: learn at once.
        self.agents.learn()
        if self._log_path:
            write_log(self.log, self._log_path)

    def greedy_config(self) -> dict[str, Any]:
        """What the policies choose now without exploration."""
        return self._to_user(self._built().greedy(self._state))

    def get_state(self) -> dict[str, Any]:
        state = {"agents": self._built().get_state(), "state": dataclasses.asdict(self._state)}
        if self._users is not None:  # Tune's restore may not give the param_space again
            state["drop_in"] = {"space": self._roles.to_dict(), "users": dict(self._users)}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        if not hasattr(self, "agents") and "drop_in" in state:
            self._drop_in(SearchSpace.from_dict(state["drop_in"]["space"], free=True),
                          state["drop_in"]["users"])
        self._built().set_state(state["agents"])
        self._state = TrainingState(**state["state"])
        self._tb_written = len(self.log)  # written to TensorBoard when this state was saved

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)
        # Tune saves searchers into the experiment folder: the step log goes beside it.
        folder = Path(checkpoint_path).parent
        write_log(self.log, folder / STEP_LOG)
        self.agents.save_agents(folder / AGENTS_FILE, {"experiment": str(folder)})
        self._tb_written = write_tensorboard(self.log, folder / STEP_TB,
                                             self._tb_written)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # noqa: S301 - our own checkpoint file
