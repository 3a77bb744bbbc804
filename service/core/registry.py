"""The registry of methods by name, as data.

Each `Entry` names its factory lazily (`"package.module:function"`), says what it is (a
Table 9 row, a Table 8 family, whether it needs a search space) and declares its options
with type, range and allowed values, so a bad option fails at validation with one line,
before Ray starts. Entries are declared beside their methods (`baselines/entries.py`,
`rllib_policies/entries.py`) and gathered here; importing them loads no searcher library.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from service.core.api import (
    ControllerPlan,
    Plan,
    PopulationPlan,
    SearcherPlan,
    did_you_mean,
    import_path,
)
from service.core.space import SearchSpace

ENTRY_MODULES: tuple[str, ...] = ("baselines.entries", "rllib_policies.entries")
"""Modules whose `ENTRIES` list is gathered, in this order."""

LABEL = re.compile(r"[a-z0-9]+(?:[_-][a-z0-9]+)*")
"""A variant label (`emerald:product`): no doubled or trailing separators, so the cell
folder name splits back (service.core.layout)."""


PLAN_KINDS = {"searcher": SearcherPlan, "population": PopulationPlan,
               "controller": ControllerPlan}


REPORT_VIEWS: dict[str, str] = {
    "table2": "Table 2 of the DRL optimizer-selection report (DQN / PPO choosing the "
              "optimizer per epoch): test scores and convergence per method",
    "table5": "Table V of Iranfar et al. (layer-wise Q-learning): the chosen network's "
              "accuracy, size and speed",
    "fig7": "EMERALD-O Fig. 7: validation accuracy epoch after epoch with the agents' steps",
}
"""The report views an entry may feed (`Entry.feeds`)."""


def feeding(view: str) -> list[str]:
    """The entries whose cells feed report view `view` (a key of `REPORT_VIEWS`)."""
    if view not in REPORT_VIEWS:
        raise KeyError(view)
    return [name for name, e in entries().items() if view in e.feeds]


def feeds(label: str, view: str) -> bool:
    """Whether searcher `label` (an entry name, maybe with a `:label`) feeds `view`;
    False for a name no entry has."""
    found = entries().get(entry_name(str(label)))
    return found is not None and view in found.feeds


class RegistryError(ValueError):
    """An unknown method name, a bad label or a bad option; `str()` is one line."""


@dataclass(frozen=True)
class Option:
    """One option of an entry: its type, default, help, and what values are accepted
    (inclusive `low`/`high`, or `choices`; `above` is an exclusive lower bound)."""

    type: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    above: float | None = None

    def accepted(self) -> str:
        """What the option accepts, for error messages and `searchers --options`."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = [self.type.__name__]
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.low is not None:
            parts.append(f">= {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return " ".join(parts)

    def field(self) -> tuple[Any, Any]:
        """The pydantic field this option is (`options_model`): its type (a Literal of the
        choices), default and bounds."""
        annotation: Any = Literal[self.choices] if self.choices is not None else self.type
        return annotation, Field(self.default, ge=self.low, le=self.high, gt=self.above)

    def refusal(self, where: str, value: Any) -> str:
        """The one line for a value the option does not accept: the value, a suggestion,
        what is accepted."""
        hint = did_you_mean(value, [str(c) for c in self.choices]) if (
            self.choices and isinstance(value, str)) else ""
        return f"{where}: {value!r} is not accepted{hint}; give {self.accepted()}"


@dataclass(frozen=True)
class Entry:
    """A registry entry.

    `factory` is called with space, metric, mode, seed, budget and the options, and returns
    a `Plan`. `table9_row` is the EMERALD-O Table 9 row it stands for; `table8` its Table 8
    family ("grid" or "bayesian", preferred in registry order); `kind` the plan kind its
    factory returns (population and controller plans change hyperparameters inside a trial,
    so their final test replays a schedule); `needs_space` is False for
    entries that search nothing; `check` validates the options against the space (cheap,
    no Ray) and returns an error message or None.
    """

    name: str
    summary: str
    factory: str
    options: dict[str, Option] = field(default_factory=dict)
    table9_row: str | None = None
    table8: Literal["grid", "bayesian"] | None = None
    kind: Literal["searcher", "population", "controller"] = "searcher"
    needs_space: bool = True
    check: Callable[[SearchSpace, dict[str, Any]], str | None] | None = None
    replay_s: float = 0.0
    """Its own compute per replayed cell, seconds (`searcher_s` in docs/results/replay: 20
    trials x 12 epochs on 2 cores): a replay starts the costliest cells first, so its
    workers end together."""
    feeds: tuple[str, ...] = ()
    """The method-specific report views its cells feed (`REPORT_VIEWS`): an experiment that
    runs the entry gets them, so reports name no entry."""
    continuous_space: bool = False
    """It searches the table's continuous ranges even where a replay gives every other
    entry the recorded values as choices (PB2's GP needs ranges; its suggestions are
    snapped to the grid and counted)."""
    multi_objective: bool = False
    """Its factory takes lists of metrics and modes (the experiment's `objectives`) and
    searches the front natively; other entries optimise the scalarised `objective`."""

    @property
    def replays_schedule(self) -> bool:
        return self.kind != "searcher"

    @property
    def shares_driver(self) -> bool:
        """Its cells may share one Tune driver with other cells (service.backends.tune.shared): a
        searcher, whose trials its own searcher and scheduler decide; a population's or a
        controller's trials change hyperparameters and run as experiments of their own."""
        return self.kind == "searcher"

    def load_factory(self) -> Callable[..., Plan]:
        return import_path(self.factory)


@cache
def entries() -> dict[str, Entry]:
    """Every entry by name, gathered from `ENTRY_MODULES`."""
    out: dict[str, Entry] = {}
    for module in ENTRY_MODULES:
        for entry in importlib.import_module(module).ENTRIES:
            if entry.name in out:
                raise RuntimeError(f"registry: {entry.name!r} declared twice")
            if not LABEL.fullmatch(entry.name):
                raise RuntimeError(f"registry: entry name {entry.name!r} is not a safe label")
            out[entry.name] = entry
    return out


def available() -> list[str]:
    return list(entries())


def entry_name(name: str) -> str:
    """The registry entry of `name`: a searcher may carry a label, `emerald:product`, so
    one experiment can compare variants of an entry (options given per labelled name)."""
    return name.split(":", 1)[0]


def entry(name: str) -> Entry:
    return entries()[entry_name(check_name(name))]


def check_name(name: Any) -> str:
    """Return `name` if its entry is registered and its label is safe, else raise with a
    suggestion."""
    known = entries()
    base = entry_name(name) if isinstance(name, str) else name
    if not isinstance(name, str) or base not in known:
        raise RegistryError(f"unknown searcher {name!r}{did_you_mean(base, known)}; "
                            f"available: {', '.join(known)}")
    if ":" in name:
        label = name[len(base) + 1:]
        if not LABEL.fullmatch(label) or len(label) > 40:
            raise RegistryError(
                f"searcher label {label!r} in {name!r}: use a-z and 0-9, words joined by one "
                "'_' or '-' (at most 40 characters), e.g. emerald:fast-decay")
    return name


OPTIONS_CONFIG = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)
"""Entry options are validated as the config is (service.core.config): pydantic, strict
types (no number from true/false or text, an int where a float goes), finite numbers."""


@cache
def options_model(name: str) -> type[BaseModel]:
    """Entry `name`'s options as a pydantic model, from its `Option` declarations."""
    found = entries()[name]
    fields = {key: opt.field() for key, opt in found.options.items()}
    return create_model(f"{name.replace('-', '_')}_options", __config__=OPTIONS_CONFIG,
                        **fields)


def check_options(name: str, options: Mapping[str, Any],
                  space: SearchSpace | None = None) -> dict[str, Any]:
    """Validate an entry's options (against `space` too, when given); return them complete
    with defaults."""
    found = entry(name)
    if not isinstance(options, Mapping):
        raise RegistryError(f"options of {name!r} must be a mapping of option: value")
    try:
        out = options_model(found.name).model_validate(dict(options)).model_dump()
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        key = str(first["loc"][0]) if first["loc"] else ""
        if first["type"] == "extra_forbidden" or key not in found.options:
            accepted = ", ".join(found.options) or "none"
            raise RegistryError(f"unknown option {key!r} for {name!r}"
                                f"{did_you_mean(key, found.options)}; accepted: {accepted}"
                                ) from None
        raise RegistryError(found.options[key].refusal(f"option {key!r} of {name!r}",
                                                       options[key])) from None
    if space is not None and found.check is not None:
        problem = found.check(space, out)
        if problem:
            raise RegistryError(f"{name!r}: {problem}")
    return out
