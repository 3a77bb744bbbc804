"""Configuration: defaults, merging, and one clear line for every kind of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.core import registry
from service.core.config import ConfigError, build_config, load_config, parse_set
from service.core.space import default_space

ROOT = Path(__file__).resolve().parents[2]

INVALID: list[tuple[dict, str]] = [
    ({"epocs": 3}, "epocs: unknown key"),
    ({"budget": {"trails": 3}}, "budget.trails: unknown key (did you mean 'trials'?)"),
    ({"budget": {"trials": 0}}, "budget.trials: Input should be greater than or equal to 1"),
    ({"budget": {"epochs": "many"}}, "budget.epochs: give a number, not the text 'many'"),
    ({"dataset": {"name": "cifar1000"}}, "did you mean 'cifar100'?"),
    ({"dataset": {"name": "cifar100"}}, "set dataset.root to the folder"),
    ({"dataset": {"name": "cifar10"}}, "set dataset.root"),
    ({"dataset": {"val_fraction": 0.5, "test_fraction": 0.5}}, "must stay below 0.9"),
    ({"dataset": {"image_size": 2}}, "dataset.image_size"),
    ({"backbones": ["vgg166"]}, "did you mean 'vgg16'?"),
    ({"backbones": ["vgg16@0"]}, "width"),
    ({"backbones": []}, "at least one backbone"),
    ({"backbones": ["vgg16", "vgg16@1"]}, "repeated backbone"),
    ({"backbones": ["tests.user_models:wrong_output"]},
     "backbone tests.user_models:wrong_output: output is (2, 11) for a batch of 2, expected "
     "(2, 10) class scores"),
    ({"backbones": ["torchvision:resnet81"]}, "did you mean 'resnet18'?"),
    ({"searchers": ["optuan"]}, "did you mean 'optuna'?"),
    ({"searchers": []}, "at least one searcher"),
    ({"searchers": ["random", "random"]}, "repeated searcher"),
    ({"searcher_options": {"optuna": {"n_startup": 3}}}, "is not in searchers"),
    ({"searchers": ["optuna"], "searcher_options": {"optuna": {"n_startup": 3}}},
     "did you mean 'n_startup_trials'?"),
    ({"searchers": ["asha"], "searcher_options": {"asha": {"grace_period": 0}}}, ">= 1"),
    ({"seeds": []}, "at least one seed"),
    ({"seeds": [1, 1]}, "repeated seed"),
    ({"seeds": [-1]}, "seeds must be in 0..4294967295"),
    ({"space": {"learning_rate": {"loguniform": [1e-5, 1e-1]}}}, "unknown hyperparameter"),
    ({"space": {"lr": {"loguniform": [0, 1e-1]}}}, "space.lr: 0 is outside [1e-07, 10]"),
    ({"space": {"lr": {"loguniform": [1e-1, 1e-5]}}}, "needs low < high"),
    ({"space": {"lr": {"logunifrom": [1e-5, 1e-1]}}}, "did you mean 'loguniform'?"),
    ({"space": {"optimizer": ["adam", "adamm"]}}, "did you mean 'adam'?"),
    ({"space": {"flip": ["yes", "no"]}}, "is not a boolean"),
    ({"space": {"rotation": {"choice": [0, 10, 400]}}}, "outside [0, 180]"),
    ({"space": {"batch_size": {"uniform": [16, 64]}}},
     "batch_size is an integer; use {int: [16, 64]}"),
    ({"space": {"lr": 0.001, "optimizer": "adam"}}, "nothing to search"),
    ({"metric": "accuracy"}, "unknown metric"),
    ({"name": "../escape"}, "not a safe folder name"),
    ({"resources": {"gpus": 1.5}}, "whole number"),
    ({"resources": {"cpus": 0}}, "resources.cpus"),
    ({"concurrency": 0}, "concurrency"),
    # Iranfar et al.: per-layer names, eq. 2 as the metric, early termination
    ({"space": {"conv1_filters": [16, 32], "conv2_filters": [16, 32]}},
     "space.conv1_filters: per-layer hyperparameters need backbone vgg16_layers, not "
     "resnet18@0.25"),
    ({"backbones": ["vgg16_layers"], "space": {"conv1_kernel": {"choice": [3, 13]}}},
     "space.conv1_kernel: 13 is outside [1, 11]"),
    ({"space": {"conv14_filters": [16, 32]}}, "per layer conv<1-13>_filters|kernel|stride"),
    ({"metric": "reward"}, "metric: 'reward' is Iranfar et al.'s eq. 2; add a reward section"),
    ({"metric": "reward", "reward": {"c_acc": 1.5}}, "reward.c_acc"),
    ({"termination": {"loss": -1}}, "termination.loss"),
    ({"termination": {"batch_patience": 0}}, "termination.batch_patience"),
    ({"backend": "replay", "replay": {"tables": ["docs/tables/digits-vgg16.parquet"]},
      "termination": {"loss": 1.0}}, "termination: a replay has no batch times"),
    ({"searchers": ["layerwise"], "backbones": ["vgg16_layers"],
      "space": {"conv1_filters": [16, 32], "conv1_kernel": [3, 5]}},
     "needs at least two agents"),
]


def _checked(raw: dict) -> None:
    """What every command does with a config: the schema, then the checks of what it names
    (service.checks.check_config: image folders, user models)."""
    from service.checks import check_config

    check_config(build_config(raw))


@pytest.mark.parametrize(("raw", "expected"), INVALID, ids=[str(i) for i in range(len(INVALID))])
def test_invalid_config_gives_one_clear_line(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        _checked(raw)
    message = str(info.value)
    assert expected in message, message
    assert "\n" not in message


def test_messages_are_distinct() -> None:
    messages = set()
    for raw, _ in INVALID:
        with pytest.raises(ConfigError) as info:
            _checked(raw)
        messages.add(str(info.value))
    assert len(messages) >= 30


def test_defaults_are_emerald_space() -> None:
    cfg = build_config({})
    space = cfg.search_space
    assert space.names == default_space().names
    assert space["rotation"].choices == (0, 10, 20, 30)
    assert space["optimizer"].choices == ("adam", "sgd", "rmsprop")
    assert (space["lr"].low, space["lr"].high) == (1e-5, 1e-1)
    assert cfg.mode == "max"
    assert cfg.budget.epoch_budget == cfg.budget.trials * cfg.budget.epochs


def test_preset_yaml_and_overrides_merge(tmp_path: Path) -> None:
    file = tmp_path / "x.yaml"
    file.write_text("searchers: [optuna, hyperband]\nbudget: {trials: 4, epochs: 2}\n")
    cfg = load_config(file, parse_set(["budget.trials=5", "seeds=[1, 2]"]), preset="smoke")
    assert cfg.searchers == ["optuna", "hyperband"]
    assert cfg.budget.trials == 5 and cfg.budget.epochs == 2
    assert cfg.seeds == [1, 2]
    assert cfg.dataset.name == "synthetic"  # from the preset


def test_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("budget: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown preset 'smok' \\(did you mean 'smoke'"):
        load_config(preset="smok")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_cli_bad_input_exits_2_before_anything_is_written(tmp_path: Path) -> None:
    proc = _cli("run", "--preset", "smoke", "--searchers", "random,optuan",
                "--storage", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: searchers: unknown searcher 'optuan' (did you mean 'optuna'?); "
                     "available: " + ", ".join(registry.available())]
    assert not (tmp_path / "out").exists()
    assert "ray" not in proc.stdout.lower()
    proc = _cli("run", "--preset", "smoke", "--trials", "two", cwd=tmp_path)
    assert proc.returncode == 2 and "--trials" in proc.stderr


def test_cli_validate_prints_resolved_config(tmp_path: Path) -> None:
    proc = _cli("validate", "--preset", "smoke", "--set", "budget.trials=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "trials: 3" in proc.stdout


def test_layerwise_presets_validate_and_carry_document_001s_settings() -> None:
    from service.core.config import load_config
    from service.core.presets import get_preset

    cpu = load_config(preset="layerwise-cpu")
    assert cpu.metric == "reward" and cpu.mode == "max" and cpu.reward is not None
    assert cpu.termination.active and cpu.backbones == ["vgg16_layers@0.125"]
    assert cpu.searchers == ["layerwise", "random", "fixed:original"] and len(cpu.seeds) == 5
    gpu = get_preset("layerwise-gpu-cifar100")
    # Table III's VGG-16 row over all 19 layers: 13 x 3 + 5 + 1 per-layer dimensions
    layered = [k for k in gpu["space"] if k.startswith(("conv", "pool", "dense"))]
    assert len(layered) == 45 and gpu["space"]["conv7_filters"] == {
        "choice": [16, 32, 64, 128, 256]}
    assert gpu["resources"]["gpus"] == 1 and gpu["budget"]["epochs"] == 10


def test_searchers_over_a_preset_take_its_options_for_the_others_along() -> None:
    """`--searchers` narrowing a preset drops the options and paired comparisons the preset
    brought for entries no longer listed; options the overrides set are still checked."""
    cfg = load_config(None, {"searchers": ["emerald", "emerald:decay", "random"]},
                      preset="replay-emerald")
    assert set(cfg.searcher_options) == {"emerald:decay"}
    assert cfg.replay.paired == ["emerald vs random", "emerald vs emerald:decay"]
    with pytest.raises(ConfigError, match="searcher_options.optuna"):
        load_config(None, {"searchers": ["random"], "searcher_options.optuna": {}},
                    preset="cpu-small")


def test_set_weights_of_a_backbone_whose_width_holds_a_dot(tmp_path: Path) -> None:
    """`--set weights.resnet18@0.0625=w.pt` sets one backbone's weights (its spec has a
    dot); split at every dot it read as weights.resnet18@0 -> 0625 and named the wrong
    backbone."""
    state = tmp_path / "w.pt"
    state.write_bytes(b"0")
    cfg = load_config(None, parse_set([f"weights.resnet18@0.0625={state}",
                                       "backbones=[resnet18@0.0625]"]))
    assert cfg.weights == {"resnet18@0.0625": str(state)}
    with pytest.raises(ConfigError, match="weights.vgg16@0.5: not one of backbones"):
        load_config(None, parse_set([f"weights.vgg16@0.5={state}",
                                     "backbones=[resnet18@0.0625]"]))
