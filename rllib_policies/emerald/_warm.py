"""Warm start for EMERALD-O's agents: the file of their network weights that an experiment
(or `python -m service pretrain`) leaves, and reading it back.

Only the weights travel: not the replay buffer, the optimizer state, the step counter or the
exploration schedule, so a warm-started search explores on its own budget. The file also
records each agent's action layout; a search whose space gives other actions is refused.
Pure (pickle and numpy): the registry's option check reads it before Ray starts.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

AGENTS_FILE = "emerald-agents.pkl"
"""Written beside the searcher's state in each EMERALD-O cell folder, and by `pretrain`."""
KIND = "emerald-agents"
VERSION = 1


class WarmStartError(ValueError):
    """A warm-start path that cannot be used, in one line."""


SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
})
"""What an agents file may name besides plain containers: numpy arrays and their dtypes
(the weights). Anything else a pickle names (a function to call, a class to build) is
refused before it runs: a warm-start path may come from anyone."""


class _WeightsUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that builds only `SAFE_GLOBALS` (as the Python docs' "Restricting
    Globals" recipe), so loading a file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in SAFE_GLOBALS or (module == "numpy.dtypes" and
                                              name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which an agents file "
                                     "never holds")


def layout(actions: Any) -> dict[str, Any]:
    """What an agent's action index means: the augmentation combinations, the optimizers and
    the number of rate bins (the rates themselves follow each space's own range)."""
    return {"aug": [sorted(a.items()) for a in actions.aug],
            "optimizers": list(actions.optimizers), "opt_actions": len(actions.opt)}


def save_agents(path: str | Path, weights: dict[str, Any], actions: Any, *, algo: str,
                hidden: tuple[int, ...], source: dict[str, Any]) -> Path:
    """Write the agents file atomically; `source` says where the weights were learned."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"kind": KIND, "version": VERSION, "algo": algo, "hidden": list(hidden),
               "layout": layout(actions), "weights": weights, "source": source}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(payload, f)
    tmp.replace(path)
    return path


def find_agents_file(path: str | Path) -> Path:
    """The agents file itself, or the only one under a folder (an experiment or cell)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.exists() and not path.is_dir():
        raise WarmStartError(f"warm_start: {str(path)!r} is not a regular file; give an "
                             "agents file or the folder of an earlier EMERALD-O experiment")
    if not path.is_dir():
        raise WarmStartError(f"warm_start: {str(path)!r} does not exist; give an agents file "
                             f"or the folder of an earlier EMERALD-O experiment")
    found = sorted(path.rglob(AGENTS_FILE))
    if not found:
        raise WarmStartError(f"warm_start: {str(path)!r} holds no {AGENTS_FILE}; give the "
                             "folder of an EMERALD-O experiment that ran, or pretrain one")
    if len(found) > 1:
        raise WarmStartError(f"warm_start: {str(path)!r} holds {len(found)} agent files (one "
                             f"per cell); give one of them, e.g. {str(found[0])!r}")
    return found[0]


def load_agents(path: str | Path, actions: Any | None = None, *, algo: str | None = None,
                hidden: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Read and check an agents file against the search it starts (its action layout,
    algorithm and network sizes, when given)."""
    file = find_agents_file(path)
    try:
        with open(file, "rb") as f:
            payload = _WeightsUnpickler(f).load()
    except Exception as err:  # noqa: BLE001 - any file that is not an agents pickle of ours
        text = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise WarmStartError(f"warm_start: {str(file)!r} cannot be read as an agents file "
                             f"({text}); give one that an EMERALD-O run or pretrain wrote"
                             ) from None
    if not isinstance(payload, dict) or payload.get("kind") != KIND:
        raise WarmStartError(f"warm_start: {str(file)!r} is not an EMERALD-O agents file")
    if algo is not None and payload["algo"] != algo:
        raise WarmStartError(f"warm_start: {str(file)!r} holds {payload['algo']} agents, this "
                             f"search uses algo: {algo}; set algo: {payload['algo']}")
    if hidden is not None and tuple(payload["hidden"]) != tuple(hidden):
        raise WarmStartError(f"warm_start: {str(file)!r} has hidden layers "
                             f"{payload['hidden']}, this search {list(hidden)}")
    if actions is not None and payload["layout"] != layout(actions):
        raise WarmStartError(
            f"warm_start: {str(file)!r} was learned on other actions "
            f"({_describe(payload['layout'])}) than this space gives "
            f"({_describe(layout(actions))}); warm-start from a search of the same "
            "augmentation and optimizer dimensions")
    return payload


def _describe(lay: dict[str, Any]) -> str:
    return (f"{len(lay['aug'])} augmentation actions, optimizers "
            f"{'/'.join(lay['optimizers'])}, {lay['opt_actions']} optimizer actions")
