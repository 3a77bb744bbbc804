"""Command line: `python -m service run|bench|report|resume|validate|searchers|dashboard`.

The same entrypoint serves a laptop (an embedded local Ray) and a cluster
(`ray job submit ... -- python -m service run --config x.yaml`, where Ray sets RAY_ADDRESS).
Configuration errors print one line and exit with status 2 before Ray starts or any file is
written.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from service.backends.tune.ray_start import init_ray
from service.checks import (
    check_config,
    check_data,
    check_machine,
    check_storage,
    check_writable,
)
from service.core.config import ConfigError, ExperimentConfig, load_config, parse_set

EXIT_CONFIG = 2

_FLAG_PATHS: dict[str, tuple[str, Any]] = {
    # flag attribute: (dotted config key, converter)
    "name": ("name", str),
    "dataset": ("dataset.name", str),
    "data_root": ("dataset.root", str),
    "backbones": ("backbones", lambda s: [x.strip() for x in s.split(",") if x.strip()]),
    "searchers": ("searchers", lambda s: [x.strip() for x in s.split(",") if x.strip()]),
    "trials": ("budget.trials", int),
    "epochs": ("budget.epochs", int),
    "seeds": ("seeds", lambda s: [int(x) for x in s.split(",") if x.strip()]),
    "concurrency": ("concurrency", int),
    "cpus_per_trial": ("resources.cpus", float),
    "gpus_per_trial": ("resources.gpus", float),
    "storage": ("storage", str),
    "backend": ("backend", str),
    "tables": ("replay.tables", lambda s: [x.strip() for x in s.split(",") if x.strip()]),
}


def _experiment_args(p: argparse.ArgumentParser, default_preset: str | None) -> None:
    p.add_argument("--config", help="YAML experiment file")
    p.add_argument("--preset", default=default_preset,
                   help="start from a named preset (see service/core/presets.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any key, e.g. --set budget.trials=4 (repeatable)")
    p.add_argument("--name")
    p.add_argument("--dataset")
    p.add_argument("--data-root", dest="data_root")
    p.add_argument("--backbones", help="comma list, e.g. vgg16@0.125,resnet18@0.25")
    p.add_argument("--searchers", help="comma list, e.g. random,optuna,hyperband")
    p.add_argument("--trials", help="trials per searcher")
    p.add_argument("--epochs", help="epochs per trial")
    p.add_argument("--seeds", help="comma list of seeds")
    p.add_argument("--concurrency", help="max concurrent trials per searcher")
    p.add_argument("--cpus-per-trial", dest="cpus_per_trial")
    p.add_argument("--gpus-per-trial", dest="gpus_per_trial")
    p.add_argument("--storage", help="folder for results (default ./results)")
    p.add_argument("--backend", help="tune (train for real, default) or replay (recorded "
                   "tables, simulated clock)")
    p.add_argument("--table", dest="tables", help="replay tables, comma list (implies "
                   "nothing: give --backend replay too, or the replay preset)")
    _ray_args(p)


def _ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray")
    p.add_argument("--num-gpus", type=int, default=None,
                   help="GPUs of the embedded Ray (logical GPUs schedule without hardware)")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's, Tune's and the libraries' log lines (default: a progress "
                        "line; they go to <experiment>/logs/)")


MAX_ERROR = 400
"""The longest error line printed: a value echoed back (a YAML alias bomb expands to
megabytes) is cut."""


def one_line(err: BaseException) -> str:
    """An error as one line of at most `MAX_ERROR` characters."""
    text = " ".join(str(err).split())
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR - 20] + " ... (cut)"


class _Parser(argparse.ArgumentParser):
    """argparse with the service's one-line errors: `error: <flag>: <why>; see --help`
    (argparse prints its usage block first), exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}; see {self.prog} --help", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _experiment_args(sub.add_parser("run", help="run an experiment (config or preset)"), None)
    _experiment_args(sub.add_parser("bench", help="run a benchmark preset"), "cpu-small")
    _experiment_args(sub.add_parser(
        "record", help="record learning curves of a design into replay tables"), None)
    v = sub.add_parser("validate", help="check a config and print it resolved")
    _experiment_args(v, None)
    r = sub.add_parser("report", help="write tables and plots for a storage folder")
    r.add_argument("folder", help="<storage>/<name>, or <storage> for every experiment in it")
    r.add_argument("--out", help="output folder (default <folder>/report)")
    r.add_argument("--format", choices=("csv", "parquet"), default="csv")
    res = sub.add_parser("resume", help="continue an interrupted experiment")
    res.add_argument("folder", help="<storage>/<name>")
    _ray_args(res)
    sub.add_parser("searchers", help="list the registry")
    d = sub.add_parser("dashboard", help="optuna-dashboard on a run's trials (its "
                       "optuna.journal), live while it runs; bound to 127.0.0.1")
    d.add_argument("path", help="<storage>/<name> of a run, or its optuna.journal")
    d.add_argument("--port", type=int, default=8080,
                   help="port on 127.0.0.1 (default 8080; 0: any free port)")
    pre = sub.add_parser("pretrain", help="train EMERALD-O's agents on replay tables, for "
                         "searcher_options.emerald.warm_start")
    pre.add_argument("--table", dest="tables", action="append", default=[], required=True,
                     help="replay table to train on (repeatable: episodes take them in turn)")
    pre.add_argument("--out", required=True, help="agents file to write, e.g. agents.pkl")
    pre.add_argument("--episodes", type=int, default=20, help="replayed searches (default 20)")
    pre.add_argument("--trials", type=int, default=12, help="trials per episode (default 12)")
    pre.add_argument("--epochs", type=int, default=12, help="epochs per trial (default 12)")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="an emerald option, e.g. --option algo=dqn (repeatable)")
    pre.add_argument("--resume", action="store_true",
                     help="start from the weights already in --out")
    so = sub.add_parser("sockets", help="start the embedded local Ray, list the sockets it "
                        "listens on and what a request with no token gets, stop it")
    so.add_argument("--json", action="store_true", help="rows as JSON")
    return parser


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Preset, then YAML, then flags, then --set; validated once."""
    overrides: dict[str, Any] = {}
    for attr, (key, convert) in _FLAG_PATHS.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        try:
            overrides[key] = convert(value)
        except ValueError:
            raise ConfigError(f"--{attr.replace('_', '-')}: {value!r} is not valid for {key}"
                              ) from None
    overrides.update(parse_set(args.set))
    cfg = load_config(args.config, overrides, preset=args.preset)
    check_config(cfg)
    return cfg


MAX_EPISODES = 100_000
"""Pretraining episodes at most (each replays a whole search)."""


def _pretrain(args: argparse.Namespace) -> int:
    """Check everything, then run the episodes (no Ray: replayed on the simulated clock)."""
    from service.backends.replay.pretrain import check_pretrain, pretrain
    from service.core.api import Budget

    options = parse_set(args.option, flag="--option")
    try:
        budget = Budget(trials=args.trials, epochs=args.epochs)
    except ValueError as err:
        raise ConfigError(f"--trials/--epochs: {err.errors()[0]['msg']}") from None
    if not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed: {args.seed}; give 0 to {2**32 - 1}")
    if args.episodes > MAX_EPISODES:
        raise ConfigError(f"--episodes: {args.episodes}; give at most {MAX_EPISODES}")
    check_writable(Path(args.out), "--out", "--out", folder=False)
    check_pretrain(args.tables, args.out, args.episodes, options)
    from service.core.table import cached_table

    short = [t for t in args.tables if cached_table(t).epochs < budget.epochs]
    if short:
        raise ConfigError(f"--epochs: {budget.epochs} is more than table {short[0]!r} "
                          f"recorded ({cached_table(short[0]).epochs}); give at most that")
    if args.resume:
        from rllib_policies import WarmStartError, load_agents

        if not Path(args.out).is_file():
            raise ConfigError(f"--resume: {args.out!r} does not exist yet; drop --resume")
        try:
            load_agents(args.out)
        except WarmStartError as err:
            raise ConfigError(f"--resume: {err}") from None
    summary = pretrain(args.tables, args.out, episodes=args.episodes, budget=budget,
                       seed=args.seed, options=options, resume=args.resume)
    print(f"agents after {summary['episodes']} episodes: {summary['out']} "
          f"({summary['wall_time_s']:.0f} s); warm-start a search with "
          f"searcher_options: {{emerald: {{warm_start: {summary['out']}}}}}")
    return 0


def live_report(folder: Path) -> None:
    """The report rewritten while a run goes on (without the paper's figures, which come at
    the end): the writer the CLI gives a backend that can refresh it."""
    from service.reports import write_report

    write_report(folder, live=True)


def _run(cfg: ExperimentConfig, args: argparse.Namespace, *, restore: bool = False) -> int:
    """Run the config's cells on its backend (service.backends.base), write the report and
    print how it went; a backend that cannot start is one error line (exit 2)."""
    from service.backends.base import backend_for
    from service.reports import write_report

    backend = backend_for(cfg)
    start = time.time()
    try:
        backend.start(cfg, args)
        if cfg.dashboard:
            print(f"live trials: python -m service dashboard {cfg.experiment_dir}",
                  flush=True)
        try:
            summaries = backend.run(cfg, restore=restore,
                                    verbose=bool(getattr(args, "verbose", False)),
                                    live_report=live_report)
        finally:
            backend.stop()
    except ConfigError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_CONFIG
    written = write_report(cfg.experiment_dir)
    headline, after, status = backend.outcome(cfg, summaries, time.time() - start)
    print(headline)
    print(Path(written[backend.summary]).read_text().split("\n## Table ")[0])
    from service.reports.overhead import breakdown, breakdown_markdown

    phases = breakdown(cfg.experiment_dir)  # a run's slot time; None for a replay
    if phases is not None:
        print("Where the time went:\n" + breakdown_markdown(phases))
    for name, path in written.items():
        print(f"  {name}: {path}")
    for line in after:
        print(line)
    return status


def _record(cfg: ExperimentConfig, args: argparse.Namespace) -> int:
    import ray

    from service.backends.replay.record import run_record

    try:
        init_ray(args, cfg)
    except ConfigError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_CONFIG
    start = time.time()
    try:
        paths = run_record(cfg)
    finally:
        ray.shutdown()
    print(f"recorded in {time.time() - start:.0f} s:")
    for path in paths:
        print(f"  {path}")
    return 0


def _json_mapping(path: Path) -> bool:
    """Whether `path` holds a JSON object (UTF-8)."""
    import json

    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8-sig")), dict)
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help (0), or a flag argparse refused (2, one line)
        return int(done.code or 0)
    try:
        if args.command == "searchers":
            from service.core import registry

            for entry in registry.entries().values():
                row = f"  (EMERALD-O Table 9: {entry.table9_row})" if entry.table9_row else ""
                print(f"{entry.name:15s} {entry.summary}{row}")
                for key, opt in entry.options.items():
                    print(f"{'':15s}   {key}={opt.default!r}: {opt.help} ({opt.accepted()})")
            return 0
        if args.command == "pretrain":
            return _pretrain(args)
        if args.command == "dashboard":
            from service.reports.dashboard import check_port, find_journal, serve

            journal = find_journal(args.path)
            check_port(args.port)
            serve(journal, args.port)
            return 0
        if args.command == "sockets":
            from service.backends.tune.sockets import main as sockets_main

            return sockets_main(as_json=args.json)
        if args.command == "report":
            from service.reports import write_report

            folder = Path(args.folder)
            if not folder.is_dir():
                raise ConfigError(f"folder: {str(folder)!r} is not a directory")
            if args.out:
                check_writable(Path(args.out), "--out", "--out", folder=True)
            from service.reports import find_experiments

            for experiment in find_experiments(folder):
                stored = experiment / "experiment_config.json"
                if stored.exists() and (not stored.is_file() or not _json_mapping(stored)):
                    raise ConfigError(f"folder: {str(stored)!r} is not the JSON config a "
                                      "run writes; nothing written")
            from service.reports.render import holds_files

            if not holds_files(find_experiments(folder)):
                raise ConfigError(f"folder: {str(folder)!r} holds no result yet (no cell "
                                  "folder with a file a run writes); nothing written")
            for name, path in write_report(folder, args.out, args.format).items():
                print(f"{name}: {path}")
            # TensorBoard names each run by its path: <experiment>/<cell>/<trial>
            print(f"TensorBoard over all searchers: tensorboard --logdir {folder}")
            return 0
        if args.command == "resume":
            from service.backends.tune.experiment import stored_config
            from service.core.config import build_config

            folder = Path(args.folder)
            if not (folder / "experiment_config.json").exists():
                raise ConfigError(f"folder: {str(folder)!r} holds no experiment_config.json; "
                                  "give <storage>/<name> of an earlier run")
            if not _json_mapping(folder / "experiment_config.json"):
                raise ConfigError(f"folder: {str(folder / 'experiment_config.json')!r} is not "
                                  "the JSON config a run writes; the experiment cannot be "
                                  "resumed")
            stored = stored_config(folder)
            missing = [k for k in ("name", "storage", "searchers") if k not in stored]
            if missing:
                raise ConfigError(f"folder: {str(folder / 'experiment_config.json')!r} lacks "
                                  f"{', '.join(missing)}: not the config a run writes; the "
                                  "experiment cannot be resumed")
            cfg = build_config(stored)
            check_config(cfg)
            if cfg.experiment_dir.resolve() != folder.resolve():
                raise ConfigError(f"folder: its config belongs to {str(cfg.experiment_dir)!r}"
                                  f", not {str(folder)!r} (a copy?); resume that folder, or "
                                  "run the copy's config anew with run --config")
            check_machine(cfg, args)
            check_storage(cfg)
            check_data(cfg, args)
            return _run(cfg, args, restore=True)
        if args.command == "record" and getattr(args, "backend", None) == "replay":
            raise ConfigError("--backend: record trains every configuration for real and "
                              "writes a table; drop --backend replay (and --table)")
        cfg = config_from_args(args)
        if args.command in ("run", "bench", "record", "validate"):
            check_machine(cfg, args)
            check_data(cfg, args)
        if args.command in ("run", "bench", "record"):
            check_storage(cfg)
        if args.command == "record":
            from service.backends.replay.record import check_design

            if cfg.backend == "replay":  # from a config file or preset
                raise ConfigError("backend: record trains every configuration for real and "
                                  "writes a table; drop backend: replay (and its tables)")

            if "space" not in cfg.model_fields_set:
                raise ConfigError("space: record trains every configuration of a design over "
                                  "the space you give; set space (or --preset record-emerald) "
                                  "instead of recording the default space for real")

            check_design(cfg)  # a resume must record the same design: refuse before Ray
            if cfg.record.out:
                check_writable(Path(cfg.record.out), "record.out", "--set record.out=DIR",
                               folder=True)
            return _record(cfg, args)
        if args.command == "validate":
            import yaml

            print(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
            return 0
        from service.backends.tune.experiment import check_fresh

        check_fresh(cfg)
    except ConfigError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as err:  # ExperimentExists and other up-front refusals
        from service.backends.tune.experiment import ExperimentExists

        if isinstance(err, ExperimentExists):
            print(f"error: {one_line(err)}", file=sys.stderr)
            return EXIT_CONFIG
        raise
    return _run(cfg, args)
