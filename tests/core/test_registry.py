"""The registry as data: entries declared beside their methods, options validated with
their types, ranges and choices at config time (one line, before Ray), labels that keep
cell folder names reversible, and no import cycle between config, registry and entries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.core import registry
from service.core.config import ConfigError, build_config
from service.core.layout import Cell, cell_name, parse_cell_name
from tests.fresh import fresh_python

BAD_OPTIONS = [
    ("emerald", {"algo": "sac"}, "one of dqn, ppo"),
    ("emerald", {"combine": "mean"}, "one of weighted, product, min"),
    ("emerald", {"epsilon_decay": 0.0}, "> 0"),
    ("emerald", {"epsilon_decay": "fast"}, "give float"),
    ("emerald", {"early_stopping": "yes"}, "give bool"),
    ("emerald-dynamic", {"step_epochs": 0}, ">= 1"),
    ("emerald-dynamic", {"algo": "dqnn"}, "did you mean 'dqn'"),
    ("pbt", {"quantile_fraction": 7.0}, "<= 0.5"),
    ("pbt", {"resample_probability": -0.1}, ">= 0"),
    ("pbt", {"population": 1}, ">= 2"),
    ("pb2", {"perturbation_interval": 0}, ">= 1"),
    ("hyperband", {"reduction_factor": 1}, ">= 2"),
    ("asha", {"grace_period": "one"}, "give int"),
    ("grid", {"points": 1}, ">= 2"),
    ("grid", {"shuffle": 1}, "give bool"),
    ("optuna", {"n_startup_trials": 0}, ">= 1"),
    ("skopt", {"n_initial_points": 2.5}, "give int"),
    ("trivialaugment", {"optimizer": "adamm"}, "did you mean 'adam'"),
    ("trivialaugment", {"lr": 100.0}, "<= 10"),
    ("trivialaugment", {"repeats": 0}, ">= 1"),
    ("ax", {"anything": 1}, "accepted: none"),
    ("hyperopt", {"n_initial_point": 3}, "did you mean 'n_initial_points'"),
]


@pytest.mark.parametrize(("name", "options", "message"), BAD_OPTIONS)
def test_bad_option_fails_at_validation_with_one_line(name, options, message) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"searchers": [name], "searcher_options": {name: options}})
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"searcher_options.{name}: ")
    assert message in text
    key = next(iter(options))
    assert repr(key) in text


def test_cli_bad_option_exits_2_before_anything_is_written(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service", "run", "--searchers", "pbt", "--storage",
         str(tmp_path), "--set", "searcher_options.pbt.quantile_fraction=7.0"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "quantile_fraction" in out.stderr
    assert not any(tmp_path.iterdir())


def test_space_checks_of_entries_run_without_options() -> None:
    with pytest.raises(ConfigError, match="searchers.pb2: .*numeric range"):
        build_config({"searchers": ["pb2"], "space": {"optimizer": ["adam", "sgd"]}})
    with pytest.raises(ConfigError, match="nothing to search for 'random'"):
        build_config({"searchers": ["random", "trivialaugment"], "space": {"lr": 0.1}})
    build_config({"searchers": ["trivialaugment"], "space": {"lr": 0.1}})  # needs no space


@pytest.mark.parametrize("label", ["a__b", "_a", "a_", "a--b", "A", "a.b", "a:b", ""])
def test_labels_that_would_break_folder_names_are_refused(label: str) -> None:
    with pytest.raises(ConfigError, match="label"):
        build_config({"searchers": [f"emerald:{label}"]})


@pytest.mark.parametrize("cell", [
    Cell("emerald:a_b-c", "vgg16@0.125", 3), Cell("emerald-dynamic", "resnet18", 0),
    Cell("random", "efficientnetv2_b0@0.5", 12), Cell("grid:x1", "vgg19@1e-05", 1),
    Cell("random", "torchvision:resnet18", 0), Cell("optuna", "MyPkg.models:Build@0.5", 2),
    Cell("layerwise", "vgg16_layers@0.125", 4)])
def test_cell_names_round_trip(cell: Cell) -> None:
    assert parse_cell_name(cell_name(cell)) == cell


def test_non_cells_do_not_parse() -> None:
    for name in ("report", "random__vgg16", "random__vgg16__x1", "a.b.c__vgg16__s1"):
        assert parse_cell_name(name) is None


def test_entries_say_what_they_are() -> None:
    entries = registry.entries()
    assert {e.kind for e in entries.values()} == {"searcher", "population", "controller"}
    assert [n for n, e in entries.items() if e.table8 == "grid"] == ["grid"]
    assert all(e.factory.count(":") == 1 for e in entries.values())
    for e in entries.values():
        assert callable(e.load_factory()), e.name


def test_no_import_cycle_and_validation_loads_no_searcher_library() -> None:
    code = ("import sys, service.core.config, service.core.registry as r; r.entries(); "
            "heavy = [m for m in ('ray', 'optuna', 'hyperopt', 'skopt', 'ax', 'torch') "
            "if m in sys.modules]; print(heavy)")
    assert fresh_python(code, timeout=120) == "[]"
