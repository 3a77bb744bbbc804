"""The searchers' race as Ray metrics: the callback's arithmetic on Tune's trial events
(without Ray), and the numbers read back from a Ray node's Prometheus endpoint (a Ray
instance of its own, in a subprocess: slow tier)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from typing import Any

import pytest

from service.backends.tune.race import BEST, EPOCHS, TRIALS_DONE, TRIALS_FAILED, RaceMetrics


class Recorder:
    """Stands in for a Ray metric: records what was set or added, per tag set."""

    def __init__(self) -> None:
        self.values: dict[tuple, float] = {}

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.values[tuple(sorted(tags.items()))] = value

    def inc(self, value: float, tags: dict[str, str]) -> None:
        key = tuple(sorted(tags.items()))
        self.values[key] = self.values.get(key, 0.0) + value


def trial(tid: str, searcher: str) -> Any:
    return SimpleNamespace(trial_id=tid, config={"lr": 0.1, "run": {"searcher": searcher}})


def feed(race: RaceMetrics) -> None:
    """Two searchers: random's trials reach 0.5 then 0.9 (one diverges later), optuna's one
    trial errors after an epoch of 0.7; a trial without run settings is not counted."""
    a, b, c = trial("a", "random"), trial("b", "random"), trial("c", "optuna")
    race.on_trial_result(1, [], a, {"val_acc": 0.5})
    race.on_trial_result(2, [], a, {"val_acc": 0.9})
    race.on_trial_result(3, [], b, {"val_acc": 0.6})
    race.on_trial_result(4, [], b, {"val_acc": float("nan"), "diverged": True})
    race.on_trial_result(5, [], c, {"val_acc": 0.7})
    race.on_trial_complete(6, [], a)
    race.on_trial_complete(7, [], b)
    race.on_trial_error(8, [], c)
    race.on_trial_result(9, [], SimpleNamespace(trial_id="x", config={}), {"val_acc": 1.0})


def test_best_done_failed_and_epochs_per_searcher() -> None:
    race = RaceMetrics("exp", "val_acc", "max")
    race._metrics = {name: Recorder() for name in (BEST, TRIALS_DONE, TRIALS_FAILED, EPOCHS)}
    feed(race)
    random, optuna = (("experiment", "exp"), ("searcher", "random")), \
        (("experiment", "exp"), ("searcher", "optuna"))
    got = {name: rec.values for name, rec in race._metrics.items()}
    assert got[BEST] == {random: 0.9, optuna: 0.7}
    assert got[EPOCHS] == {random: 4.0, optuna: 1.0}
    assert got[TRIALS_DONE] == {random: 2.0, optuna: 1.0}
    assert got[TRIALS_FAILED] == {random: 1.0, optuna: 1.0}  # b diverged, c errored


def test_a_minimised_metric_keeps_the_lowest() -> None:
    race = RaceMetrics("exp", "val_loss", "min")
    race._metrics = {name: Recorder() for name in (BEST, TRIALS_DONE, TRIALS_FAILED, EPOCHS)}
    for value in (0.8, 0.3, 0.5):
        race.on_trial_result(1, [], trial("a", "random"), {"val_loss": value})
    assert list(race._metrics[BEST].values.values()) == [0.3]


SCRIPT = textwrap.dedent("""
    import sys, time, urllib.request
    import ray
    from tests.backends.tune.test_race import feed
    from service.backends.tune.race import RaceMetrics

    port = int(sys.argv[1])
    ray.init(address="local", num_cpus=1, include_dashboard=False,
             _metrics_export_port=port, _system_config={"metrics_report_interval_ms": 500})
    try:
        feed(RaceMetrics("exp", "val_acc", "max"))
        wanted = ('ray_emerald_tune_best_metric', 'searcher="random"')
        deadline, text = time.time() + 90, ""
        while time.time() < deadline:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=5).read().decode()
            except OSError:
                text = ""
            if all(w in text for w in wanted) and "ray_emerald_tune_trials_failed" in text:
                break
            time.sleep(1)
        print("\\n".join(line for line in text.splitlines()
                        if line.startswith("ray_emerald_tune")))
    finally:
        ray.shutdown()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _value(lines: list[str], name: str, searcher: str) -> float:
    line = next(x for x in lines if x.startswith(name + "{") and f'searcher="{searcher}"' in x)
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.slow  # a Ray instance of its own
def test_the_race_is_read_back_from_the_nodes_metrics_endpoint() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(_free_port())],
                         capture_output=True, text=True, timeout=240, check=True).stdout
    lines = out.splitlines()
    assert _value(lines, "ray_" + BEST, "random") == 0.9
    assert _value(lines, "ray_" + BEST, "optuna") == 0.7
    # counters as Prometheus names them: with _total
    assert _value(lines, f"ray_{TRIALS_FAILED}_total", "optuna") == 1.0
    assert _value(lines, f"ray_{TRIALS_DONE}_total", "random") == 2.0
    assert _value(lines, f"ray_{EPOCHS}_total", "random") == 4.0
