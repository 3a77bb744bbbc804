"""What sits between the methods and Tune: the result guard every searcher is wrapped in,
the one host of in-trial controllers, and the step logs RL methods write.

The host owns a `Controller` (service.core.api) as a named Ray actor shared by all trials of a
cell, saves its state with Tune's experiment checkpoints (so `Tuner.restore` brings it
back), checks every answer against the search space, and lets a trial go on training while
the controller's learner updates run.
"""

from __future__ import annotations

import csv
import functools
import inspect
import math
import pickle
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from service.backends.tune.spaces import from_tune
from service.core.api import ControllerPlan, Observation, import_path, plain
from service.core.layout import STEP_LOG, STEP_TB
from service.core.space import Dim, SearchSpace

# The result guard.


def is_failure(result: dict | None, metric: str | None) -> bool:
    """Whether a final result carries no usable finite metric (or the trial diverged, or
    was terminated early by Iranfar et al.'s slow-batch or loss rule)."""
    if not result or metric is None or result.get("diverged") or result.get("terminated"):
        return True
    for name in metric if isinstance(metric, list) else [metric]:  # several: objectives
        value = result.get(name)
        try:
            if value is None or not math.isfinite(float(value)):
                return True
        except (TypeError, ValueError):
            return True
    return False


class ResultGuard(Searcher):
    """Wraps a searcher; forwards everything, translating outcomes on the way in, so a NaN
    loss cannot poison a surrogate model: non-finite, missing or diverged results reach the
    wrapped searcher as failures (`error=True`), which each library records as a failed trial
    (Optuna FAIL, HyperOpt error state, Ax failure, BOHB skip, GP worst-seen). Suggestions
    come back as plain Python values (BOHB returns numpy scalars). `best` is the best finite
    result seen and its config."""

    def __init__(self, searcher: Searcher) -> None:
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.searcher = searcher
        self.best: tuple[float, dict[str, Any]] | None = None
        self._configs: dict[str, dict[str, Any]] = {}

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = self.searcher.suggest(trial_id)
        if isinstance(config, dict):
            config = plain(config)
            self._configs[trial_id] = config
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if not is_failure(result, self.metric):
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        config = self._configs.pop(trial_id, None)
        if error or is_failure(result, self.metric):
            self.searcher.on_trial_complete(trial_id, result=None, error=True)
            return
        self.searcher.on_trial_complete(trial_id, result=result, error=False)
        first = self.metric[0] if isinstance(self.metric, list) else self.metric
        value = float(result[first])  # type: ignore[index]  # several: the first's best
        mode = self.mode[0] if isinstance(self.mode, list) else self.mode
        sign = 1.0 if mode == "max" else -1.0
        if self.best is None or sign * value > sign * self.best[0]:
            self.best = (value, config or {})

    def on_pause(self, trial_id: str) -> None:
        """HyperBandForBOHB pauses trials and tells BOHB's searcher (ConcurrencyLimiter
        forwards it here)."""
        if hasattr(self.searcher, "on_pause"):
            self.searcher.on_pause(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        if hasattr(self.searcher, "on_unpause"):
            self.searcher.on_unpause(trial_id)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def get_state(self) -> dict:
        # Tune's SearchGenerator saves each wrapper's get_state and the innermost searcher's
        # file (save) separately.
        return {"best": self.best, "configs": dict(self._configs)}

    def set_state(self, state: dict) -> None:
        self.best, self._configs = state.get("best"), dict(state.get("configs", {}))


# Step logs of RL methods (their file names are in service.core.layout).




def write_tensorboard(rows: list[dict[str, Any]], folder: str | Path, start: int,
                      prefix: str = "emerald") -> int:
    """Per-step reward, epsilon, actions and metrics as TensorBoard scalars (rows from
    `start` on); returns how many rows are written in all."""
    if len(rows) <= start:
        return start
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(folder)) as writer:
        for row in rows[start:]:
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                        key != "step" and value == value:
                    writer.add_scalar(f"{prefix}/{key}", value, row["step"])
    return len(rows)


def write_log(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Per-step state, action probabilities, actions and rewards as CSV."""
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


# The controller host.


class ControllerError(RuntimeError):
    """A controller answered something outside the search space."""


def describe(dim: Dim) -> str:
    if dim.kind in ("choice", "constant"):
        return "one of " + ", ".join(map(repr, dim.choices))
    return f"{dim.kind} [{dim.low:g}, {dim.high:g}]"


def check_answer(name: str, space: SearchSpace, answer: Any, *, own: bool = False
                 ) -> dict[str, Any]:
    """`answer` as plain values if every change names a searched dimension and lies inside
    it (with `own`: any dimension of `space`, the controller's own); otherwise
    ControllerError naming the controller and the value."""
    if not isinstance(answer, Mapping):
        raise ControllerError(f"controller {name!r} answered {answer!r}: expected a mapping "
                              "of hyperparameter: value")
    searched = {d.name: d for d in (space.dims if own else space.searched)}
    out = plain(dict(answer))
    for key, value in out.items():
        if key not in searched:
            raise ControllerError(
                f"controller {name!r} answered {key}={value!r}, but {key!r} is not searched "
                f"in this space (searched: {', '.join(searched) or 'none'})")
        if not searched[key].contains(value):
            raise ControllerError(f"controller {name!r} answered {key}={value!r}, outside the "
                                  f"space: {describe(searched[key])}")
    return out


class HostedController:
    """A controller as the host runs it (in a named actor, or in this process): builds it
    from its factory path and checks its answers."""

    def __init__(self, name: str, factory: str, options: dict[str, Any],
                 space: dict[str, Any], seed: int, controls: dict[str, Any] | None = None
                 ) -> None:
        self.name = name
        self.space = SearchSpace.from_dict(space, free=True)
        self.controls = None if controls is None else SearchSpace.from_dict(controls)
        self.controller = import_path(factory)(self.space, seed=seed, **options)

    def ready(self) -> bool:
        return True

    def decide(self, obs: Observation) -> dict[str, Any]:
        answer = self.controller.decide(obs)
        if self.controls is not None:
            return check_answer(self.name, self.controls, answer, own=True)
        return check_answer(self.name, self.space, answer)

    def propose(self, trial_id: str, max_epochs: int) -> dict[str, Any] | None:
        """A new trial's starting config, from a controller that sets it (`propose`:
        hyperparameters a running trial cannot change, such as its architecture); None
        from one that does not."""
        propose = getattr(self.controller, "propose", None)
        if propose is None:
            return None
        return check_answer(self.name, self.space, propose(trial_id, max_epochs))

    def finish(self, obs: Observation) -> None:
        self.controller.finish(obs)

    def learn(self) -> dict[str, float]:
        return self.controller.learn()

    def step_log(self, start: int = 0) -> list[dict[str, Any]]:
        return self.controller.step_log(start)

    def get_state(self) -> dict[str, Any]:
        return self.controller.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.controller.set_state(state)


_IN_PROCESS: dict[str, HostedController] = {}
"""Controllers hosted in this process (unit tests, no Ray), found by name like actors."""


class ControllerClient:
    """A trial's side of the host: asks for decisions, reports the end of the trial. The
    learner update a decision triggers is sent after the answer arrives and not waited
    for (the actor runs it while the trial trains)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._local = _IN_PROCESS.get(name)
        if self._local is None:
            import ray

            self._actor = ray.get_actor(name)

    def decide(self, obs: Observation) -> tuple[dict[str, Any], float]:
        """The controller's changes and the seconds the trial waited for them."""
        start = time.perf_counter()
        if self._local is not None:
            answer = self._local.decide(obs)
            wait = time.perf_counter() - start
            self._local.learn()
            return answer, wait
        import ray

        answer = ray.get(self._actor.decide.remote(obs))
        wait = time.perf_counter() - start
        self._actor.learn.remote()  # not awaited: the trial goes on training
        return answer, wait

    def finish(self, obs: Observation) -> None:
        if self._local is not None:
            self._local.finish(obs)
            self._local.learn()
            return
        import ray

        ray.get(self._actor.finish.remote(obs))
        self._actor.learn.remote()


class ControllerHost(Searcher):
    """Tune's side of the host: starts the controller, lets Tune run `num_samples` trials
    whose hyperparameters the controller sets at run time (`suggest` returns `{}`), closes
    errored trials as failures, and saves / restores the controller with the experiment.
    Without a Ray connection, or with `in_process=True`, the controller lives here."""

    def __init__(self, plan: ControllerPlan, space: SearchSpace, *, metric: str = "val_acc",
                 mode: str = "max", name: str | None = None, in_process: bool = False) -> None:
        super().__init__(metric=metric, mode=mode)
        self.name = name or f"{plan.name}-{uuid.uuid4().hex[:8]}"
        self.entry = plan.name
        self._args = (self.name, plan.controller, dict(plan.controller_options),
                      space.to_dict(), plan.seed, plan.controls)
        # Searched dimensions the controller does not set: sampled once per trial.
        own = set(SearchSpace.from_dict(plan.controls).names) if plan.controls else None
        self._rest = None if own is None else SearchSpace(
            tuple(d for d in space.searched if d.name not in own))
        self._seed = plan.seed
        self._max_epochs = plan.max_epochs
        self._suggested = 0
        self._in_process = in_process
        self._handle: Any = None
        self._tb_written = 0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the searcher with the Tuner: an actor handle must not travel; the
        # stable name finds (or recreates) the controller after a restore.
        state = dict(self.__dict__)
        if not isinstance(state["_handle"], HostedController):
            state["_handle"] = None
        return state

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        if self._handle is None:
            if ray.is_initialized() and not self._in_process:
                actor = ray.remote(num_cpus=0)(HostedController)
                self._handle = actor.options(name=self.name, get_if_exists=True).remote(
                    *self._args)
            else:
                self._handle = HostedController(*self._args)
                _IN_PROCESS[self.name] = self._handle
        if isinstance(self._handle, HostedController):
            return getattr(self._handle, method)(*args)
        return ray.get(getattr(self._handle, method).remote(*args))

    def start(self) -> None:
        """Build the controller now: a replay refuses an entry that cannot search its table
        before the cell runs, instead of at its first decision."""
        if self._handle is None:
            self._call("ready")

    @property
    def hosted(self) -> HostedController | None:
        """The controller when it lives in this process (tests), else None."""
        return self._handle if isinstance(self._handle, HostedController) else None

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._handle is None:
            self._call("ready")  # the controller exists before the first trial asks it
        config = dict(self._call("propose", trial_id, self._max_epochs) or {})
        if not self._rest or not self._rest.searched:
            return config
        import numpy as np

        self._suggested += 1
        return {**config, **plain(self._rest.sample(np.random.default_rng(
            [self._seed, self._suggested])))}

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if error:  # the trial could not report its last step: close it as a failure
            self._call("finish", Observation(trial_id, 0, 0, {}, []))
            self._call("learn")

    def get_state(self) -> dict[str, Any]:
        return {"controller": self._call("get_state"), "name": self.name,
                "suggested": self._suggested}

    def set_state(self, state: dict[str, Any]) -> None:
        self._call("set_state", state["controller"])
        self._suggested = int(state.get("suggested", 0))
        self._tb_written = len(self._call("step_log"))  # written when it was saved

    def save(self, checkpoint_path: str) -> None:
        state = self.get_state()
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)
        folder = Path(checkpoint_path).parent
        log = self._call("step_log")
        write_log(log, folder / STEP_LOG)
        self._tb_written = write_tensorboard(log, folder / STEP_TB, self._tb_written,
                                             prefix=self.entry)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # noqa: S301 - our own checkpoint file


class StateSearcher(Searcher):
    """A Searcher whose whole state is `get_state()`: save and restore pickle it to a file
    the service itself wrote (never a user-supplied file).

    A subclass whose constructor takes the space first may be built without one, as Ray's
    own wrappers are: `RandomSearch(seed=0)` as a `tune.Tuner` search_alg then takes its
    space from Tune's `param_space` (`SearchSpace.from_tune`, any names) when Tune calls
    `set_search_properties`."""

    _deferred: tuple[Any, tuple[Any, ...], dict[str, Any]] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or list(inspect.signature(init).parameters)[1:2] != ["space"]:
            return

        @functools.wraps(init)
        def deferring(self: StateSearcher, space: Any = None, *args: Any, **kw: Any) -> None:
            if space is None:  # the space comes with set_search_properties
                self._deferred = (init, args, kw)
                StateSearcher.__init__(self, metric=kw.get("metric"), mode=kw.get("mode"))
                return
            init(self, space, *args, **kw)

        cls.__init__ = deferring  # type: ignore[method-assign]

    def __init__(self, *, metric: str | None = None, mode: str | None = None) -> None:
        super().__init__(metric=metric, mode=mode)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        # The space comes from the constructor (the service's runs: Tune's config then only
        # holds constants), or now from Tune's param_space (a user's own Tuner).
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        if self._deferred is not None:
            init, args, kw = self._deferred
            space = from_tune(config)
            self._deferred = None
            init(self, space, *args, **{**kw, "metric": self._metric, "mode": self._mode})
        return True

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        """Searchers that do not learn from results ignore them."""

    def get_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))  # noqa: S301 - our own checkpoint file
