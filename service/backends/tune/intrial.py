"""The in-trial methods (emerald-dynamic, optsel-dqn, optsel-ppo, hypera) in a user's own
`tune.Tuner` and function trainable.

`InTrialSearch` is the Tuner's `search_alg`: it builds the registry entry's controller on
Tune's param_space and hosts it (`ControllerHost`: one named actor shared by all trials,
saved and restored with the experiment). Inside the trainable, `search.trial(config)` is the
trial's client: at every epoch it asks `decide()` for hyperparameter changes and tells
`observe(...)` the epoch's metrics; leaving the `with` block tells the controller the trial
ended. The controllers are the registry's own classes: no second implementation.

    search = InTrialSearch("emerald-dynamic", epochs=EPOCHS, num_samples=4,
                           names={"learning_rate": "lr", "hflip": "flip"})

    def train(config):
        with search.trial(config) as trial:
            for epoch in range(EPOCHS):
                changes = trial.decide()     # {} between the method's steps
                ...train one epoch with trial.hp...
                trial.observe(val_acc=acc, train_loss=loss)
                tune.report({"val_acc": acc})

    tune.Tuner(train, param_space=..., tune_config=tune.TuneConfig(
        search_alg=search, metric="val_acc", mode="max", num_samples=4)).fit()
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from service.backends import plans
from service.backends.tune.searching import ControllerClient, ControllerHost
from service.backends.tune.spaces import from_tune
from service.core import registry
from service.core.api import Budget, ControllerPlan, Observation, plain
from service.core.space import Dim, SearchSpace, SpaceError

OBSERVED = ("val_acc", "val_loss", "train_acc", "train_loss", "grad_norm", "grad_norm_std",
            "epoch_time_s")
"""What the controllers read from an epoch (service.core.api.EPOCH_FIELDS): `val_acc`
(a fraction, higher is better) always; `train_loss` for EMERALD-O, `val_loss` for
Pham's optimizer selection; the rest where the trainable measures them."""


def _controller_entries() -> list[str]:
    return [n for n, e in registry.entries().items() if e.kind == "controller"]


class InTrialSearch(ControllerHost):
    """A registry's in-trial method as the `search_alg` of a user's own Tuner; `trial`
    gives each trial its client. `names` maps the user's names to the catalogue's
    (`service.core.space.HPARAMS`: lr, optimizer, flip, ...) where they differ; searched
    names the method does not set are drawn at random once per trial."""

    def __init__(self, method: str, *, epochs: int, num_samples: int, seed: int = 0,
                 names: Mapping[str, str] | None = None,
                 options: Mapping[str, Any] | None = None, name: str | None = None,
                 in_process: bool = False) -> None:
        """`epochs` and `num_samples`: each trial's epochs and the Tuner's trials (they size
        the method's exploration schedule); `options`: the registry entry's options;
        `name`: the controller actor's (give a fixed one to resume with `Tuner.restore` in a
        new process); `in_process`: the controller lives here, not in an actor (tests
        without Tune)."""
        registry.check_name(method)
        if method not in _controller_entries():
            raise registry.RegistryError(
                f"{method!r} is no in-trial method; give one of "
                f"{', '.join(_controller_entries())} (searchers go in search_alg directly)")
        self.method = method
        self.budget = Budget(trials=num_samples, epochs=epochs)
        self.options = registry.check_options(method, dict(options or {}))
        self.names = dict(names or {})
        self.step_epochs = int(self.options.get("step_epochs", 1))
        self.seed = seed
        self.name = name or f"{method}-{uuid.uuid4().hex[:8]}"
        self._users: dict[str, str] = {}  # catalogue name -> the user's
        self._space: SearchSpace | None = None
        # The host's part comes with the param_space (set_search_properties); until then
        # this object travels in the trainable's closure with no controller.
        self._handle: Any = None
        self._in_process = in_process
        Searcher.__init__(self, metric=None, mode=None)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        """Tune's param_space, renamed to the catalogue's names, is the controller's space;
        the entry checks it (a space the method cannot use fails here, in one line)."""
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        if self._space is None:
            self._host(catalogue_space(config, self.names),
                       {self.names.get(u, u): u for u in config})
        return True

    def _host(self, space: SearchSpace, users: dict[str, str]) -> None:
        """The entry's plan on `space` (catalogue names) and the host of its controller;
        `users`: each catalogue name's name in the user's space."""
        plan = plans.build(self.method, space=space, metric="val_acc", mode="max",
                           seed=self.seed, budget=self.budget, options=self.options)
        assert isinstance(plan, ControllerPlan)
        metric, mode = self._metric, self._mode
        ControllerHost.__init__(self, plan, space, metric=metric or "val_acc",
                                mode=mode or "max", name=self.name,
                                in_process=self._in_process)
        self._space, self._users = space, users

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The trial's starting values, in the user's names: what the method proposes, the
        other searched names drawn at random (seeded)."""
        if self._space is None:
            raise RuntimeError("InTrialSearch has not had Tune's param_space yet: pass it as "
                               "a Tuner's search_alg")
        config = dict(super().suggest(trial_id) or {})
        self._suggested += 1
        rng = np.random.default_rng([self.seed, self._suggested, 1])
        for dim in self._space.searched:
            config.setdefault(dim.name, plain(dim.sample(rng)))
        return {self._users.get(k, k): v for k, v in config.items()}

    def get_state(self) -> dict[str, Any]:
        assert self._space is not None, "no controller before Tune's param_space"
        return {**super().get_state(), "seed": self.seed, "space": self._space.to_dict(),
                "users": dict(self._users)}

    def set_state(self, state: dict[str, Any]) -> None:
        """The controller, the count of suggestions and the seed that draws the starting
        values: a restored search goes on as the saved one would have (Tune's restore
        gives no param_space again unless the user re-specifies it: the space is saved)."""
        self.seed = int(state["seed"])
        if self._space is None:
            self._host(SearchSpace.from_dict(state["space"], free=True), state["users"])
        super().set_state(state)
        self._seed = self.seed

    def trial(self, config: Mapping[str, Any], *, trial_id: str | None = None) -> TrialClient:
        """This trial's client (in the trainable; the trial id is Tune's)."""
        if trial_id is None:
            from ray import tune

            trial_id = tune.get_context().get_trial_id()
        return TrialClient(self.name, config, trial_id=str(trial_id),
                           max_epochs=self.budget.epochs, step_epochs=self.step_epochs,
                           names=self.names)


def catalogue_space(param_space: Mapping[str, Any], names: Mapping[str, str]
                    ) -> SearchSpace:
    """A Tune param_space in the catalogue's names (searched dimensions and plain-value
    constants); SpaceError for a `names` key the space lacks."""
    missing = [u for u in names if u not in param_space]
    if missing:
        raise SpaceError(f"names: {', '.join(map(repr, missing))} not in the param_space "
                         f"(its keys: {', '.join(map(str, param_space))})")
    taken: dict[str, str] = {}
    for user in param_space:
        name = names.get(user, user)
        if name in taken:
            raise SpaceError(f"names: {taken[name]!r} and {user!r} are both {name!r}; give "
                             f"each name one key")
        taken[name] = user
    searched = {d.name: d for d in from_tune(param_space)}
    dims = []
    for user, raw in param_space.items():
        name = names.get(user, user)
        if user in searched:
            d = searched[user]
            dims.append(Dim(name, d.kind, d.choices, d.low, d.high))
        elif isinstance(raw, (bool, int, float, str)):
            dims.append(Dim(name, "constant", (raw,)))
    return SearchSpace(tuple(dims))


class TrialClient:
    """One trial's side of an in-trial method: `decide()` before an epoch (the changes, in
    the user's names; the method acts every `step_epochs` epochs), `observe(...)` after it,
    `finish()` (or the end of a `with` block) when the trial ends. `hp` holds the values in
    force."""

    def __init__(self, controller: str, config: Mapping[str, Any], *, trial_id: str,
                 max_epochs: int, step_epochs: int = 1,
                 names: Mapping[str, str] | None = None) -> None:
        self.trial_id, self.max_epochs, self.step_epochs = trial_id, max_epochs, step_epochs
        self.hp: dict[str, Any] = dict(config)
        self.epoch = 0
        self.waited_s = 0.0
        self._to_catalogue = dict(names or {})
        self._to_user = {v: k for k, v in self._to_catalogue.items()}
        self._rows: list[dict[str, Any]] = []
        try:
            self._client = ControllerClient(controller)
        except ValueError as err:  # Ray: no actor of that name
            raise RuntimeError(
                f"no in-trial controller {controller!r} is running: after Tuner.restore in a "
                f"new process, build the InTrialSearch with the original run's name= "
                f"(default: a fresh one each time)") from err
        self._finished = False

    def _catalogue_hp(self) -> dict[str, Any]:
        return {self._to_catalogue.get(k, k): v for k, v in self.hp.items()}

    def decide(self) -> dict[str, Any]:
        """The hyperparameter changes for the next epoch (also applied to `hp`): the
        controller's answer at a step boundary, {} between them."""
        if self.epoch % max(1, self.step_epochs) != 0:
            return {}
        obs = Observation(self.trial_id, self.epoch, self.max_epochs, self._catalogue_hp(),
                          self._rows)
        answer, wait = self._client.decide(obs)
        self.waited_s += wait
        self._rows = []
        changes = {self._to_user.get(k, k): v for k, v in answer.items()}
        self.hp.update(changes)
        return changes

    def observe(self, metrics: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """One epoch's metrics, in the controllers' names (`OBSERVED`; `val_acc` at least).
        An epoch without a finite `val_acc` counts as diverged."""
        row = {**(metrics or {}), **fields}
        value = row.get("val_acc")
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        row.setdefault("diverged", not finite)
        self.epoch += 1
        self._rows.append(row)

    def finish(self) -> None:
        """The trial ended (after its last epoch, or earlier: stopped early)."""
        if self._finished:
            return
        self._finished = True
        self._client.finish(Observation(self.trial_id, self.epoch, self.max_epochs,
                                        self._catalogue_hp(), self._rows))

    def __enter__(self) -> TrialClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        # An exception fails the trial: Tune tells the host, which closes it as a failure.
        if kind is None:
            self.finish()
