"""The replay backend: a fixed configuration replays its recorded curve exactly; a paused
and resumed trial sees the same rows as a straight run; a PBT clone continues on its new
configuration's curve from the donor's epoch; the same seed gives the same comparison;
every registry entry runs on a small table (or says why it cannot)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ray.tune.search import Searcher

from service.backends.replay.run import run_replay, score
from service.backends.replay.simulate import ReplayError, Simulation, replay_cell
from service.core import registry
from service.core.api import Budget, Schedule, SearcherPlan
from service.core.config import build_config
from service.core.table import load_table
from service.reports import write_report
from tests.backends.replay.tables import emerald_table, own_names_table

FIXED = {"flip": True, "rotation": 20, "shift": False, "optimizer": "rmsprop", "lr": 1e-3}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return load_table(emerald_table(tmp_path_factory.mktemp("t") / "emerald.parquet"))


SUGGEST_S = 0.02
"""A suggestion's compute (the simulated clock counts it)."""


class Fixed(Searcher):
    """Suggests the same configuration every time."""

    def __init__(self, config: dict) -> None:
        super().__init__(metric="val_acc", mode="max")
        self.config = config

    def suggest(self, trial_id: str) -> dict:
        time.sleep(SUGGEST_S)
        return dict(self.config)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        pass


def _trials(sim: Simulation) -> dict[str, pd.DataFrame]:
    rows = pd.DataFrame(sim.rows)
    return {tid: g.sort_values("epoch") for tid, g in rows.groupby("trial_id")}


def test_fixed_config_replays_recorded_curve_exactly(table) -> None:
    plan = SearcherPlan("fixed", 3, 6, searcher=Fixed(FIXED))
    sim = Simulation(plan, table, seed=3, slots=1).run()
    config = table.index[tuple(FIXED[n] for n in table.names)]
    assert sim.snapped == 0 and len(sim.trials) == 3
    clock = 0.0
    for rows in _trials(sim).values():
        seed = table.seeds.index(int(rows["recorded_seed"].iloc[0]))
        assert rows["epoch"].tolist() == list(range(1, 7))
        np.testing.assert_array_equal(rows["val_acc"], table.metrics["val_acc"][config, seed])
        np.testing.assert_array_equal(rows["epoch_time_s"],
                                      table.metrics["epoch_time_s"][config, seed])
        assert rows["elapsed_s"].iloc[-1] == pytest.approx(rows["epoch_time_s"].sum())
        clock += rows["epoch_time_s"].sum()
    # one slot: trials run one after another, each suggestion computed between them (the
    # driver's other calls, refused by the one-slot limiter, overlap the training)
    assert clock + 3 * SUGGEST_S <= sim.clock <= clock + sim.searcher_s + 1e-9


def _follows_curves(sim: Simulation, table) -> None:
    """Every trial's rows continue its configuration's recorded curve epoch by epoch: in
    time order each row is the epoch after the trial's previous one, on the same history,
    or (a PBT clone, which Tune's PBT may make of a trial even after its last epoch) the
    epoch after a donor's checkpoint, on that donor's history."""
    after: dict[int, set[str]] = {}  # the histories some trial had after each epoch
    for r in sim.rows:
        after.setdefault(r["epoch"], set()).add(r["schedule"])
    for rows in _trials(sim).values():
        seed = table.seeds.index(int(rows["recorded_seed"].iloc[0]))
        previous = None
        for row in rows.sort_values("unix_time", kind="stable").itertuples():
            schedule = Schedule.from_json(row.schedule)
            assert len(schedule) == row.epoch
            before = schedule.upto(row.epoch - 1).to_json()
            if previous is None:
                assert row.epoch == 1
            elif not (row.epoch == len(previous) + 1 and before == previous.to_json()):
                assert row.epoch <= len(previous) + 1 and before in after[row.epoch - 1], \
                    (row.trial_id, row.epoch)
            previous = schedule
            hp = {n: getattr(row, f"hp_{n}") for n in table.names}
            hp = {n: bool(v) if n in ("flip", "shift") else v for n, v in hp.items()}
            config = table.snap(hp)[0]
            recorded = table.metrics["val_acc"][config, seed, row.epoch - 1]
            assert (math.isnan(recorded) and math.isnan(row.val_acc)) or \
                row.val_acc == recorded


@pytest.mark.parametrize("slots", [1, 3])
def test_paused_and_resumed_trials_see_straight_rows(table, slots: int) -> None:
    """Tune keeps a bracket's trials pending (up to the live cap), so even on one slot the
    first rung waits for all of them and HyperBand stops the worse (it ran every trial to
    the end, as random search, when the replay asked for a trial only at a free slot)."""
    sim = replay_cell("hyperband", table, seed=0, budget=Budget(trials=8, epochs=6),
                      concurrency=slots)
    started = [t for t in sim.trials if t.trial_id in sim.state]  # the rest never ran
    paused = [t for t in started if sim.state[t.trial_id].epoch not in (0, 6)]
    assert sim.stopper is not None and sim.stopper.stop_all()
    _follows_curves(sim, table)
    # HyperBand stopped some trials early: the epoch budget went to more trials than 8
    assert len(sim.trials) > 8 and paused


def test_pbt_clone_continues_new_curve_from_donor_epoch(table) -> None:
    """With the old continuation model (`epoch`); the default is tested in
    tests/backends/replay/test_continuation.py."""
    sim = replay_cell("pbt", table, seed=1, budget=Budget(trials=8, epochs=6),
                      options={"population": 8, "perturbation_interval": 2}, concurrency=8,
                      continuation="epoch")
    _follows_curves(sim, table)
    changed = 0
    for rows in _trials(sim).values():
        schedule = json.loads(rows["schedule"].iloc[-1])
        changed += len(schedule["runs"]) > 1
    assert changed, "PBT never exploited"


def test_time_budget_stops_on_the_simulated_clock(table) -> None:
    sim = replay_cell("random", table, seed=0, budget=Budget(trials=20, epochs=6),
                      time_budget_s=10.0)
    assert sim.clock <= 10.0 and len(sim.rows) < 20 * 6
    assert max(r["unix_time"] for r in sim.rows) <= 10.0


def test_population_longer_than_table_is_refused(table) -> None:
    with pytest.raises(ReplayError, match="population >= 4"):
        replay_cell("pbt", table, seed=0, budget=Budget(trials=4, epochs=6),
                    options={"population": 2})


def test_every_entry_runs_on_a_small_table(table) -> None:
    ran, refused, failed = [], {}, []
    for name, entry in registry.entries().items():
        options = {"population": 4} if entry.kind == "population" else None
        try:
            sim = replay_cell(name, table, seed=0, budget=Budget(trials=4, epochs=3),
                              options=options)
        except ReplayError as err:
            refused[name] = str(err)
            continue
        rows, figures = score(sim, table)
        assert rows and math.isfinite(figures["final_regret"]), name
        assert figures["final_regret"] >= 0 or figures["in_trial"], name
        if figures["failed"]:  # a failure scores the table's worst configuration
            assert figures["normalised_regret"] == 1.0, name
            failed.append(name)
        ran.append(name)
    # TrivialAugment trains a fixed policy the table never recorded; Pham's agents
    # choose SAM, which it did not record either
    assert set(refused) == {"trivialaugment", "optsel-dqn", "optsel-ppo"}, refused
    assert "not a column" in refused["trivialaugment"]
    assert "never recorded" in refused["optsel-ppo"] and "sam" in refused["optsel-ppo"]
    assert {"emerald", "emerald-dynamic", "pbt", "hyperband", "bohb"} <= set(ran)
    # fixed SGD at its own rate 0.1 diverges on this table: a failure, counted as the worst
    assert "fixed" in failed, failed


def test_document_004_agents_replay_on_the_optimizers_a_table_recorded(table) -> None:
    """Given optimizers the table holds, optsel-ppo runs: every epoch's optimizer is one of
    them at its own rate, and a trial is asked once per epoch."""
    options = {"optimizers": "sgd,rmsprop", "lr_sgd": 0.01}
    sim = replay_cell("optsel-ppo", table, seed=0, budget=Budget(trials=3, epochs=4),
                      options=options)
    rows = pd.DataFrame(sim.rows)
    assert len(rows) == 12 and set(rows["hp_optimizer"]) <= {"sgd", "rmsprop"}
    rates = dict(zip(rows["hp_optimizer"], rows["hp_lr"], strict=True))
    assert rates.get("sgd", 0.01) == 0.01 and rates.get("rmsprop", 1e-3) == 1e-3
    assert len(sim.host.hosted.controller.log) == 12  # one closed step per epoch


def test_early_stopping_ends_replayed_trials_as_the_trainable_does(table) -> None:
    """patience 1: a trial ends after its first epoch without a better val_acc."""
    plan = SearcherPlan("fixed", 2, 6, searcher=Fixed(FIXED), patience=1)
    sim = Simulation(plan, table, seed=3, slots=1).run()
    config = table.index[tuple(FIXED[n] for n in table.names)]
    for rows in _trials(sim).values():
        seed = table.seeds.index(int(rows["recorded_seed"].iloc[0]))
        curve = table.metrics["val_acc"][config, seed]
        stop = next((e for e in range(1, 6) if curve[e] <= curve[:e].max()), 5) + 1
        assert len(rows) == stop, (curve, len(rows))


def test_a_config_epochs_budget_shortens_the_replayed_trial(table) -> None:
    """`epochs` in a suggestion (Iranfar et al.'s shorter episodes) ends the trial there, as
    `service.backends.tune.trainable.trial_epochs` does; more than the plan's is capped."""
    for wanted, expected in ((2, 2), (99, 6)):
        plan = SearcherPlan("fixed", 2, 6, searcher=Fixed({**FIXED, "epochs": wanted}))
        sim = Simulation(plan, table, seed=3, slots=1).run()
        assert [len(rows) for rows in _trials(sim).values()] == [expected, expected]


def _comparison(tmp: Path, table) -> pd.DataFrame:
    """Searcher compute is measured, so an exact repeat leaves it off the clock."""
    cfg = build_config({"name": "rep", "storage": str(tmp), "backend": "replay",
                        "replay": {"tables": [table.path], "workers": 1,
                                   "searcher_time": False},
                        "searchers": ["random", "optuna", "asha"],
                        "budget": {"trials": 6, "epochs": 6}, "seeds": [0, 1, 2]})
    summaries = run_replay(cfg, log=lambda *_: None)
    assert len(summaries) == 9 and not [s for s in summaries if "skipped" in s]
    written = write_report(cfg.experiment_dir)
    assert {"comparison", "critical_difference", "regret_vs_trials", "regret_vs_time"} <= \
        set(written)
    text = written["comparison"].read_text()
    assert "separate" in text and "Friedman" in text
    return pd.read_csv(written["cells"]).drop(columns=["wall_time_s", "searcher_s"]).sort_values(
        ["searcher", "seed"]).reset_index(drop=True)


def test_same_seed_same_comparison(table, tmp_path) -> None:
    first = _comparison(tmp_path / "a", table)
    second = _comparison(tmp_path / "b", table)
    pd.testing.assert_frame_equal(first, second)
    assert (first["final_regret"] >= 0).all()


def test_anytime_and_paired_tables_agree_with_the_cells(table, tmp_path) -> None:
    from service.core.api import ConfigError
    from service.reports.compare import load_replay

    raw = {"name": "pair", "storage": str(tmp_path), "backend": "replay",
           "replay": {"tables": [table.path], "workers": 1,
                      "paired": ["optuna vs random"]},
           "searchers": ["random", "optuna"], "budget": {"trials": 6, "epochs": 6},
           "seeds": [0, 1, 2, 3]}
    with pytest.raises(ConfigError, match="replay.paired: 'optuna vs asha' must be"):
        build_config({**raw, "replay": {**raw["replay"], "paired": ["optuna vs asha"]}})
    cfg = build_config(raw)
    run_replay(cfg, log=lambda *_: None)
    written = write_report(cfg.experiment_dir)
    text = written["comparison"].read_text()
    assert "## Anytime regret and spread over seeds" in text and "## Paired" in text
    cells, rows = load_replay(cfg.experiment_dir)
    out = cfg.experiment_dir / "report"
    anytime = pd.read_csv(out / "anytime.csv").set_index("searcher")
    paired = pd.read_csv(out / "paired.csv").iloc[0]
    regret = cells.pivot(index="seed", columns="searcher", values="final_regret") * 100
    diff = (regret["optuna"] - regret["random"]).mean()
    assert paired["regret_diff"].startswith(f"{diff:+.2f} [")
    assert paired["blocks"] == 4
    sd = regret.std(ddof=1)
    assert anytime.loc["random", "seed_sd"] == pytest.approx(sd["random"])
    assert paired["variance_ratio"] == pytest.approx((sd["optuna"] / sd["random"]) ** 2)
    best = rows[rows["searcher"] == "random"].groupby("seed")["regret"].min().mean() * 100
    assert anytime.loc["random", "regret_at_100pct"].startswith(f"{best:.2f} [")


def test_a_paired_comparison_where_no_cell_reached_the_target() -> None:
    """A short run in which neither searcher reached the best 5% still gets its paired row
    (evals_to_target NaN, reached 0%), not a crash of the report."""
    from service.reports.compare import paired_table

    cells = pd.DataFrame({
        "searcher": ["a", "b", "a", "b"], "backbone": ["t"] * 4, "seed": [0, 0, 1, 1],
        "final_regret": [0.02, 0.03, 0.01, 0.05], "test_acc": [0.9, 0.89, 0.91, 0.88],
        "evals_to_target": [math.nan] * 4, "optimum": [0.98] * 4, "worst": [0.1] * 4})
    row = paired_table(cells, pd.DataFrame(), ["a vs b"]).iloc[0]
    assert row["blocks"] == 2 and row["reached"] == "0% vs 0%"
    assert row["regret_diff"].startswith("-2.50 [")


def test_early_stopping_emerald_spends_the_whole_epoch_budget(table) -> None:
    budget = Budget(trials=6, epochs=6)
    sim = replay_cell("emerald", table, seed=0, budget=budget)
    epochs = len(sim.rows)
    stopped_early = sum(len(g) < 6 for g in _trials(sim).values())
    assert stopped_early > 0  # ASHA stopped some trials ...
    assert epochs == budget.epoch_budget  # ... and their epochs went to more trials
    assert len(_trials(sim)) > budget.trials


def test_early_stopping_emerald_dynamic_spends_the_epoch_budget_with_penalties(table) -> None:
    """emerald-dynamic with early_stopping: a trial whose metric has not improved for
    `patience` epochs ends, its step closes with the early-stop penalty, and more trials
    spend the epochs it left, never more than the budget."""
    budget = Budget(trials=4, epochs=6)
    sim = replay_cell("emerald-dynamic", table, seed=1, budget=budget,
                      options={"early_stopping": True, "patience": 1, "step_epochs": 2})
    lengths = [len(g) for g in _trials(sim).values()]
    assert len(sim.rows) == budget.epoch_budget and len(lengths) > budget.trials, lengths
    assert any(n < budget.epochs for n in lengths)
    log = sim.client._local.controller.agents.log  # the host in this process
    stopped = [row for row in log if row["early_stopped"]]
    assert stopped and not any(row["failed"] for row in stopped)
    plain = replay_cell("emerald-dynamic", table, seed=1, budget=budget,
                        options={"step_epochs": 2})
    assert [len(g) for g in _trials(plain).values()] == [6] * 4


def test_a_quiet_replay_sends_library_output_to_the_log_folder(table, tmp_path, capfd) -> None:
    """`python -m service bench` on a replay: Optuna's "A new study created" lines go to
    <experiment>/logs/replay-<pid>.log, not the console (`--verbose` keeps them there)."""
    raw = {"name": "quiet", "storage": str(tmp_path), "backend": "replay",
           "replay": {"tables": [table.path], "workers": 2}, "searchers": ["optuna"],
           "budget": {"trials": 4, "epochs": 6}, "seeds": [0, 1]}
    cfg = build_config(raw)  # two workers: spawned processes, as the CLI runs them
    run_replay(cfg, log=print, quiet=True)
    console = capfd.readouterr()
    assert "replaying 2 cells" in console.out
    assert "A new study created" not in console.out + console.err
    logs = list((cfg.experiment_dir / "logs").glob("replay-*.log"))
    assert logs and all("A new study created" in log.read_text() for log in logs)
    run_replay(build_config({**raw, "name": "loud"}), log=print, quiet=False)
    assert "A new study created" in capfd.readouterr().err
    assert not (tmp_path / "loud" / "logs").exists()


def test_an_entry_refused_at_setup_cannot_run_and_a_crash_is_a_failure(table, tmp_path,
                                                                       monkeypatch) -> None:
    """EMERALD-O on a table without augmentation columns is refused while its plan is built
    ("cannot run", not ranked); a searcher that crashes mid-search is a failed cell with no
    rows, scored the worst, and the report still writes (its anytime row stays empty)."""
    import itertools

    from service.backends.replay.simulate import Simulation
    from service.core.table import TableMeta, write_table

    rows = [{"optimizer": o, "lr": lr, "seed": 0, "epoch": e, "val_acc": 0.5 + 0.01 * e,
             "epoch_time_s": 0.1}
            for o, lr, e in itertools.product(("adam", "sgd"), (0.001, 0.01), range(1, 4))]
    plain_table = load_table(write_table(pd.DataFrame(rows), TableMeta(),
                                         tmp_path / "noaug.parquet"))
    with pytest.raises(ReplayError, match="emerald-dynamic cannot search table"):
        replay_cell("emerald-dynamic", plain_table, seed=0, budget=Budget(trials=2, epochs=3))
    run = Simulation.run

    def crash_optuna(self):
        if self.plan.name == "optuna":
            raise RuntimeError("boom")
        return run(self)

    monkeypatch.setattr(Simulation, "run", crash_optuna)
    cfg = build_config({"name": "crash", "storage": str(tmp_path), "backend": "replay",
                        "replay": {"tables": [table.path], "workers": 1},
                        "searchers": ["random", "optuna", "emerald-dynamic"],
                        "budget": {"trials": 3, "epochs": 3}, "seeds": [0, 1]})
    summaries = run_replay(cfg, log=lambda *_: None)
    crashed = [s for s in summaries if s["searcher"] == "optuna"]
    assert all(s["failed"].startswith("crashed: RuntimeError: boom") for s in crashed)
    assert all(s["normalised_regret"] == 1.0 for s in crashed)
    text = write_report(cfg.experiment_dir)["comparison"].read_text()
    assert "## Failed cells" in text and "optuna" in text


@pytest.mark.parametrize("name", ["pbt", "pb2"])
def test_population_keeps_each_trials_architecture(name: str) -> None:
    """Table (b) searches the backbone's width: an exploiting member loads its donor's
    weights, so it keeps the donor's width (a new width would not fit them) while the rate
    and the rest are explored."""
    table = load_table("docs/tables/digits-vgg16.parquet")
    assert "width" in table.space.names
    sim = replay_cell(name, table, seed=0, budget=Budget(trials=8, epochs=12),
                      options={"population": 8, "perturbation_interval": 2}, concurrency=8)
    switched = 0
    for rows in _trials(sim).values():
        runs = json.loads(rows["schedule"].iloc[-1])["runs"]
        assert len({float(hp["width"]) for _, hp in runs}) == 1, runs
        switched += len(runs) > 1
    assert switched, f"{name} never exploited"


@pytest.mark.parametrize("name", ["hypera", "hypera-search"])
def test_hypera_runs_on_a_table_of_its_own_names_given_groups(name: str, tmp_path) -> None:
    """HYPERA's agents manage the catalogue's names; a table recorded elsewhere says which
    agent manages which of its names with the entries' `groups` option."""
    table = load_table(own_names_table(tmp_path / "own.parquet"))
    budget = Budget(trials=6, epochs=4)
    with pytest.raises(ReplayError, match="give the option groups"):
        replay_cell(name, table, seed=0, budget=budget)
    groups = "architecture=num_layers,max_units;optimization=learning_rate"
    sim = replay_cell(name, table, seed=0, budget=budget, options={"groups": groups})
    configs = {(t.config["num_layers"], t.config["max_units"], t.config["learning_rate"])
               for t in sim.trials}
    assert len(sim.trials) == 6 and len(configs) > 1
    with pytest.raises(ReplayError, match="groups: 'optimization' is not group=name"):
        replay_cell(name, table, seed=0, budget=budget, options={"groups": "optimization"})


def test_hyperband_on_one_slot_halves_its_brackets() -> None:
    """The replay-demo setting (table (a), 20 trials x 12 epochs, one slot): HyperBand's
    trials wait pending in their bracket as Tune keeps them, so the first rung compares 9
    of them and stops the worse; asking for a trial only at a free slot had each trial
    alone in its bracket and HyperBand equal to random search, cell for cell."""
    table = load_table("docs/tables/digits-vgg16_w0.0625.parquet")
    sim = replay_cell("hyperband", table, seed=0, budget=Budget(trials=20, epochs=12),
                      concurrency=1)
    epochs = sorted(st.epoch for st in sim.state.values())
    assert sim.epochs_done == 240 and sum(e < 12 for e in epochs) >= 9, epochs
    assert max(r["unix_time"] for r in sim.rows) >= sum(r["epoch_time_s"] for r in sim.rows)
