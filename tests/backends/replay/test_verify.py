"""Verification retrains for real: a shipped table's own configuration retrains to the
table's exact curve, a switching schedule's curves are stored beside the table and read back
instead of trained again, and the continuation models' errors come from those curves."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from service.backends.replay.switches import SwitchStore, model_errors, modelled, sample_switches
from service.backends.replay.verify import recording_run, retrain, verify
from service.core.api import Schedule
from service.core.table import load_table
from tests.backends.replay.tables import emerald_table

SHIPPED = "docs/tables/digits-vgg16_w0.0625.parquet"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A copy of table (a), so its switch curves go to a folder of the test's own."""
    folder = tmp_path_factory.mktemp("shipped")
    return load_table(shutil.copy(SHIPPED, folder / "digits-vgg16_w0.0625.parquet"))


def _constant(table, config: int, epochs: int) -> Schedule:
    schedule = Schedule()
    for _ in range(epochs):
        schedule.append(table.config_dict(config))
    return schedule


def test_the_recording_settings_of_a_shipped_table_are_known(shipped, tmp_path) -> None:
    run = recording_run(shipped)
    assert run == {"backbone": "vgg16@0.0625", "epochs": 12, "threads": 1,
                   "dataset": {"name": "digits", "image_size": 16}}
    assert recording_run(load_table(emerald_table(tmp_path / "t.parquet"))) is None


def test_a_per_trial_choice_retrains_to_the_table_s_value(shipped) -> None:
    """The best configuration of table (a), retrained on seed 1 as the final test does,
    gives the recorded curve exactly (the recording is reproducible on the CPU)."""
    best = int(np.nanargmax(shipped.true_values(12)))
    values, test = retrain(recording_run(shipped), _constant(shipped, best, 12), seed=1)
    np.testing.assert_array_equal(values, shipped.metrics["val_acc"][best, 1])
    assert test == pytest.approx(shipped.test[best, 1])


def test_a_switch_is_retrained_once_then_read_from_the_store(shipped, monkeypatch) -> None:
    (schedule,) = sample_switches(shipped, 1, seed=3)
    schedule = schedule.upto(4)  # 4 epochs keep the test short
    store = SwitchStore(shipped)
    value, test, trained = verify(shipped, schedule, store)
    assert len(trained) == len(shipped.seeds) and all(len(t[2]) == 4 for t in trained)
    assert math.isfinite(value) and math.isfinite(test)
    assert value == pytest.approx(np.mean([t[2][-1] for t in trained]))
    store.add(trained)
    again = SwitchStore(shipped)  # read back from <table>.switches.parquet

    def no_training(*args, **kwargs):
        raise AssertionError("a stored curve was trained again")

    monkeypatch.setattr("service.backends.replay.verify.retrain", no_training)
    assert verify(shipped, schedule, again)[:2] == pytest.approx((value, test))
    errors = model_errors(shipped, again)
    assert errors["reach"]["n"] == 1
    assert errors["epoch"]["mae"] == pytest.approx(abs(modelled(shipped, schedule, "epoch")
                                                       - value))
    assert errors["reach"]["bias"] == pytest.approx(modelled(shipped, schedule, "reach")
                                                    - value)
