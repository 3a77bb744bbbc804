"""Bad input fails as docs/experiments.md promises: one line naming the field and the fix, exit 2,
before Ray starts, nothing written under the storage path; a run whose every trial failed
exits 1 and says where its log is."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from service import checks
from service.backends.base import failed_trials_exit
from service.cli import EXIT_CONFIG, main
from service.core.layout import Cell, cell_name


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def storage(tmp_path, monkeypatch):
    """A storage folder, and a guard that Ray is never started by a refused command."""
    import ray

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started for a bad input")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "results"
    folder.mkdir()
    return folder


def _refused(argv: list[str], field: str, storage: Path, capsys) -> str:
    before = _tree(storage.parent)
    assert main(argv) == EXIT_CONFIG, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert field in err, (field, err)
    assert _tree(storage.parent) == before, "a refused command wrote something"
    return err


RUN = ["run", "--searchers", "random", "--backbones", "resnet18@0.0625", "--trials", "1",
       "--epochs", "1", "--dataset", "synthetic"]


def test_a_config_file_that_is_not_utf8_is_refused(storage, capsys) -> None:
    config = storage.parent / "bad.yaml"
    config.write_bytes(b"name: \xff\xfe\x00binary\x80\n")
    before = _tree(storage.parent)
    for command in ("validate", "run"):
        assert main([command, "--config", str(config), "--storage", str(storage)]) == 2
        err = capsys.readouterr().err.strip()
        assert "--config" in err and "UTF-8" in err and "\n" not in err, err
    assert _tree(storage.parent) == before


@pytest.mark.parametrize("text", [
    "[a, b]: 1\n",  # a list as a key
    "? {a: 1}\n: 2\n",  # a mapping as a key
    "x: " + "[" * 5000 + "]" * 5000 + "\n",  # nested past Python's recursion limit
    "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(  # an alias bomb: 10**6 values in 7 lines
        f"{n}: &{n} [{','.join(['*' + p] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True))
    + "record: {points: *f}\n",
])
def test_yaml_that_is_no_config_is_one_short_line(storage, capsys, text) -> None:
    config = storage.parent / "odd.yaml"
    config.write_text(text)
    err = _refused(["validate", "--config", str(config)], "--config", storage, capsys)
    assert len(err) < 300, err


def test_yaml_merge_keys_are_read_as_the_safe_loader_reads_them(storage) -> None:
    from service.core.config import load_config

    config = storage.parent / "merge.yaml"
    config.write_text("_budget: &b {trials: 2}\nbudget:\n  <<: *b\n  epochs: 1\n")
    with pytest.raises(Exception, match="_budget: unknown key"):
        load_config(config)  # merged; then the anchor's own key is refused by name
    config.write_text("budget:\n  <<: {trials: 2}\n  epochs: 1\n")
    assert load_config(config).budget.trials == 2


def test_validate_refuses_what_run_would_refuse(storage, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _refused(["validate", "--cpus-per-trial", "512"], "resources.cpus", storage, capsys)
    _refused(["validate", "--gpus-per-trial", "1"], "resources.gpus", storage, capsys)
    _refused(["validate", "--num-cpus", "0"], "--num-cpus", storage, capsys)


@pytest.mark.parametrize("stored", [{}, {"name": "exp"},
                                    {"name": "exp", "storage": "/elsewhere/results",
                                     "searchers": ["random"]}])
def test_resume_runs_only_the_experiment_its_folder_holds(storage, capsys, stored) -> None:
    """A config without what a run writes would train the default experiment elsewhere; one
    that names another folder (a copy) would run, and overwrite, the original."""
    folder = storage / "exp"
    folder.mkdir()
    (folder / "experiment_config.json").write_text(json.dumps(stored))
    _refused(["resume", str(folder)], "folder", storage, capsys)


def test_a_key_given_twice_in_yaml_is_refused_not_silently_overwritten(storage, capsys
                                                                       ) -> None:
    config = storage.parent / "twice.yaml"
    config.write_text("name: a\nbudget:\n  trials: 2\n  trials: 20\n")
    err = _refused(["run", "--config", str(config), "--storage", str(storage)], "--config",
                   storage, capsys)
    assert "'trials' given twice" in err and "line 4" in err


@pytest.mark.parametrize("extra,field", [
    (["--num-cpus", "-1"], "--num-cpus"),
    (["--num-cpus", "0"], "--num-cpus"),
    (["--num-gpus", "-2"], "--num-gpus"),
    (["--cpus-per-trial", "512"], "resources.cpus"),
    (["--gpus-per-trial", "64"], "resources.gpus"),
    (["--seeds", str(2**70)], "seeds"),
    (["--seeds", "-1"], "seeds"),
    (["--set", "budget.total_epochs=1e30"], "total_epochs"),
    (["--table", "docs/tables/digits-vgg16_w0.0625.parquet"], "replay.tables"),
    (["--num-cpus", "99999999999999999999"], "--num-cpus"),
    (["--num-cpus", "abc"], "--num-cpus"),  # argparse's own errors: one line too
    (["--num-gpus", "1.5"], "--num-gpus"),
    (["--verbose=1"], "--verbose"),
    (["--address", "not a host::x"], "--address"),
    (["--address", "127.0.0.1:1"], "--address"),  # nothing answers: no wait for minutes
    (["--storage", "/proc/nope"], "storage"),
    (["--storage", "x" * 300], "storage"),
    (["--storage", " "], "storage"),
])
def test_flags_a_run_cannot_satisfy_are_refused_before_ray(storage, capsys, monkeypatch,
                                                           extra, field) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU here, whatever the machine has
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _refused([*RUN, "--storage", str(storage), *extra], field, storage, capsys)


CLUSTER = [{"Alive": True, "Resources": {"CPU": 2.0, "memory": 1e9}},  # head
           {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
           {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]  # a lost node


@pytest.mark.parametrize("extra, field", [
    (["--cpus-per-trial", "16"], "resources.cpus"),
    (["--gpus-per-trial", "2"], "resources.gpus"),
    (["--cpus-per-trial", "4", "--gpus-per-trial", "1", "--set", "resources.cpus=9"],
     "resources.cpus"),
])
def test_a_trial_no_node_of_the_cluster_holds_is_refused_before_any_trial(
        storage, capsys, monkeypatch, extra, field) -> None:
    """On a cluster the check runs once joined: a trial that fits no alive node would wait
    forever in Tune's queue. Ray is left again and nothing is written."""
    import ray

    joined, left = [], []
    monkeypatch.setattr(checks, "check_address", lambda args: None)  # no head to answer
    monkeypatch.setattr(ray, "init", lambda *a, **k: joined.append(k.get("address")))
    monkeypatch.setattr(ray, "nodes", lambda: CLUSTER)
    monkeypatch.setattr(ray, "shutdown", lambda: left.append(1))
    err = _refused([*RUN, "--storage", str(storage), "--address", "10.0.0.1:6379", *extra],
                   field, storage, capsys)
    assert "no node of the cluster" in err and "10.0.0.1:6379" in err
    assert joined == ["10.0.0.1:6379"] and left == [1]


def test_trial_fits_on_one_node_of_the_cluster() -> None:
    from service.backends.tune.ray_start import trial_fits
    from service.core.config import build_config

    def fits(cpus: float, gpus: float) -> bool:
        cfg = build_config({"resources": {"cpus": cpus, "gpus": gpus}})
        return trial_fits(cfg, CLUSTER) is None

    assert fits(8, 1) and fits(2, 0) and fits(0.5, 0.5)
    assert not fits(9, 0) and not fits(8, 2) and not fits(64, 8)  # the lost node counts not


def test_a_storage_path_that_is_a_file_is_refused(storage, capsys) -> None:
    file = storage / "not-a-folder"
    file.write_text("x")
    _refused([*RUN, "--storage", str(file)], "storage", storage, capsys)
    _refused([*RUN, "--storage", str(file / "below")], "storage", storage, capsys)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x80\x81", b"[1, 2]"])
def test_resume_of_a_corrupt_experiment_is_refused(storage, capsys, content) -> None:
    folder = storage / "exp"
    folder.mkdir()
    (folder / "experiment_config.json").write_bytes(content)
    _refused(["resume", str(folder)], "folder", storage, capsys)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe\x80\x81"])
def test_report_of_a_corrupt_experiment_writes_nothing(storage, capsys, content) -> None:
    folder = storage / "exp"
    folder.mkdir()
    (folder / "experiment_config.json").write_bytes(content)
    _refused(["report", str(folder)], "folder", storage, capsys)


@pytest.mark.parametrize("files", [("summary.json", "progress.csv", "result.json"),
                                   ("summary.json", "epochs.parquet")])
def test_report_of_cells_holding_random_bytes_writes_nothing(storage, capsys, files) -> None:
    """A real run's files, and a replay's (epochs.parquet), all random bytes."""
    folder = storage / "exp"
    cell = folder / cell_name(Cell("random", "resnet18@0.0625", 0))
    cell.mkdir(parents=True)
    (folder / "experiment_config.json").write_text(json.dumps({"name": "exp"}))
    for name in files:
        (cell / name).write_bytes(bytes(range(256)))
    _refused(["report", str(folder)], "holds no readable", storage, capsys)


def test_a_replay_table_without_a_finite_metric_is_refused(storage, capsys) -> None:
    from service.core.table import TableMeta, write_table

    rows = [{"lr": lr, "seed": 0, "epoch": 1, "val_acc": math.nan, "epoch_time_s": 0.1}
            for lr in (0.001, 0.01)]
    table = write_table(pd.DataFrame(rows), TableMeta(), storage.parent / "nan.parquet")
    _refused(["bench", "--backend", "replay", "--table", str(table), "--searchers", "random",
              "--epochs", "1", "--storage", str(storage)], "replay.tables", storage, capsys)


def test_a_run_whose_every_trial_failed_exits_1_with_the_first_error(tmp_path, capsys
                                                                     ) -> None:
    cell = tmp_path / cell_name(Cell("random", "resnet18@0.0625", 0))
    (cell / "trial_0").mkdir(parents=True)
    (cell / "trial_0" / "error.txt").write_text(
        "Traceback (most recent call last):\n  ...\nDataError: dataset.root: 'x/7.png' "
        "cannot be decoded; remove or replace it\n")
    summary = {"searcher": "random", "backbone": "resnet18@0.0625", "seed": 0}
    assert failed_trials_exit(tmp_path, [{**summary, "trials": 2, "errors": 2}]) == 1
    err = capsys.readouterr().err
    assert "every trial failed (2 of 2)" in err and "DataError: dataset.root" in err
    assert str(tmp_path / "logs" / f"{cell.name}.log") in err
    assert failed_trials_exit(tmp_path, [{**summary, "trials": 2, "errors": 1}]) == 0
    assert "1 of 2 trials failed" in capsys.readouterr().out
    assert failed_trials_exit(tmp_path, [{**summary, "trials": 2, "errors": 0}]) == 0


def test_pretrain_checks_every_table_before_it_trains(storage, capsys, tmp_path) -> None:
    """A bad second table (not a table; a table without augmentation columns; a folder) is
    refused naming --table before any episode runs, and --out is never written."""
    from tests.backends.replay.tables import emerald_table

    good = emerald_table(tmp_path / "good.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    no_aug = tmp_path / "noaug.csv"
    pd.DataFrame([{"lr": lr, "optimizer": "adam", "seed": 0, "epoch": 1, "val_acc": 0.5,
                   "epoch_time_s": 0.1} for lr in (0.001, 0.01)]).to_csv(no_aug, index=False)
    out = storage / "agents.pkl"
    for second in (bad, no_aug, tmp_path):
        _refused(["pretrain", "--table", str(good), "--table", str(second), "--out",
                  str(out), "--episodes", "2"], "--table", storage, capsys)
        assert not out.exists()


def test_data_that_cannot_be_read_is_refused_before_ray(storage, capsys, tmp_path_factory
                                                        ) -> None:
    """A corrupt image in any split, images of mixed sizes without image_size, and a
    missing CIFAR-10 root fail at the check before Ray (they used to start Ray, fail every
    trial and exit 0). The data lives outside the storage's folder: decoding a good split
    may cache it under the data root, by design."""
    from tests.training.test_imagefolder import write_images

    tmp_path = tmp_path_factory.mktemp("data")

    for split in ("train", "val", "test"):
        root = tmp_path / f"corrupt-{split}"
        for s in ("train", "val", "test"):
            write_images(root / s, 3, seed=len(s))
        (root / split / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
        _refused(["run", "--searchers", "random", "--backbones", "resnet18@0.0625",
                  "--dataset", "imagefolder", "--data-root", str(root), "--storage",
                  str(storage)], "dataset.root", storage, capsys)
    mixed = tmp_path / "mixed"
    write_images(mixed / "train", 3, size=(12, 12))
    write_images(mixed / "train", 1, size=(16, 10), classes=("cat",), seed=9)
    err = _refused(["run", "--searchers", "random", "--backbones", "resnet18@0.0625",
                    "--dataset", "imagefolder", "--data-root", str(mixed), "--storage",
                    str(storage)], "dataset.image_size", storage, capsys)
    assert "dataset.root" not in err  # the field to change, once
    _refused(["run", "--searchers", "random", "--backbones", "resnet18@0.0625", "--dataset",
              "cifar10", "--data-root", str(tmp_path / "no-cifar"), "--storage",
              str(storage)], "dataset.root", storage, capsys)


def _bomb_png(path, side: int = 100_000) -> None:
    """A valid PNG header that claims side x side pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                     chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("first", ["empty", "text", "bomb", "big"])
def test_a_bad_first_image_is_one_line_before_ray(storage, capsys, tmp_path_factory,
                                                  first) -> None:
    """The first image is opened to size the data set: an empty file, text named .png or
    a header claiming 10**10 pixels (PIL's bomb error; its warning above 89 M pixels)."""
    from tests.training.test_imagefolder import write_images

    root = tmp_path_factory.mktemp("data") / "d"
    write_images(root / "train", 3)
    bad = root / "train" / "cat" / "0.png"  # sorted first
    if first == "empty":
        bad.write_bytes(b"")
    elif first == "text":
        bad.write_text("not a picture")
    else:
        _bomb_png(bad, 100_000 if first == "bomb" else 12_000)
    err = _refused(["run", "--searchers", "random", "--backbones", "resnet18@0.0625",
                    "--dataset", "imagefolder", "--data-root", str(root), "--storage",
                    str(storage)], "dataset.root", storage, capsys)
    assert str(bad) in err and "dataset.root: dataset.root" not in err


def test_splits_without_an_image_and_unreadable_cifar_files_are_refused(
        storage, capsys, tmp_path_factory) -> None:
    """Two images per class leave no validation or test image (the run scored 0 and exited
    0); a CIFAR-10 meta file of the wrong shape is a line, not a TypeError."""
    import pickle

    from tests.training.test_imagefolder import write_images

    tiny = tmp_path_factory.mktemp("data") / "tiny"
    write_images(tiny / "train", 1, classes=("a", "b"))
    _refused(["run", "--searchers", "random", "--backbones", "resnet18@0.0625", "--dataset",
              "imagefolder", "--data-root", str(tiny), "--storage", str(storage)],
             "dataset.", storage, capsys)
    _refused(["validate", "--set", "dataset.val_fraction=0.0001"], "val_fraction", storage,
             capsys)
    cifar = tmp_path_factory.mktemp("data") / "cifar-10-batches-py"
    cifar.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                 "data_batch_5", "test_batch"):
        (cifar / name).write_bytes(pickle.dumps({b"data": 5, b"labels": 5}))
    (cifar / "batches.meta").write_bytes(pickle.dumps({b"label_names": 5}))
    _refused(["run", "--searchers", "random", "--backbones", "resnet18@0.0625", "--dataset",
              "cifar10", "--data-root", str(cifar.parent), "--storage", str(storage)],
             "dataset.root", storage, capsys)


@pytest.mark.parametrize("text,field", [
    ("budget:\n  trials: true\n", "budget.trials"),
    ("seeds: [0, true]\n", "seeds"),
    ("dataset:\n  image_size: false\n", "dataset.image_size"),
    ("resources:\n  cpus: true\n", "resources.cpus"),
    ("concurrency: true\n", "concurrency"),
])
def test_a_number_is_never_read_from_true_or_false(storage, capsys, text, field) -> None:
    config = storage.parent / "bool.yaml"
    config.write_text(text)
    err = _refused(["validate", "--config", str(config), "--storage", str(storage)], field,
                   storage, capsys)
    assert "give a number" in err


def test_a_folder_given_as_a_file_is_called_a_folder(storage, capsys) -> None:
    folder = storage.parent / "a-folder"
    folder.mkdir()
    assert "is a folder" in _refused(["validate", "--config", str(folder)], "--config",
                                     storage, capsys)
    assert "is a folder" in _refused(["bench", "--backend", "replay", "--table", str(folder),
                                      "--storage", str(storage)], "replay.tables", storage,
                                     capsys)


def test_record_without_a_space_of_its_own_is_refused(storage, capsys) -> None:
    """It used to record the default space's grid for real."""
    _refused(["record", "--searchers", "random", "--storage", str(storage)], "space",
             storage, capsys)


@pytest.mark.parametrize("csv,sidecar,said", [
    ("lr,seed,epoch,val_acc,epoch_time_s\n", None, "holds no rows"),
    ("lr,opt,seed,epoch,val_acc,epoch_time_s\n0.1,adam,0,1,0.5,0.1\n0.1,sgd,0,1,0.6,0.1\n",
     "space:\n  lr: {loguniform: [0.001, 0.1]}\n", "column 'opt' is not in the metadata's"),
    ("lr,seed,epoch,val_acc,epoch_time_s\n0.1,0,1,inf,0.1\n0.01,0,1,0.5,0.1\n", None,
     "infinite value"),
])
def test_a_table_is_refused_with_the_right_diagnosis(storage, capsys, csv, sidecar, said
                                                     ) -> None:
    """These were refused for the wrong reason ('must be numeric', 'epoch 1 twice') or,
    for an infinite metric, run against an infinite optimum."""
    table = storage.parent / "t.csv"
    table.write_text(csv)
    if sidecar:
        (storage.parent / "t.csv.yaml").write_text(sidecar)
    err = _refused(["bench", "--backend", "replay", "--table", str(table), "--searchers",
                    "random", "--epochs", "1", "--storage", str(storage)], "replay.tables",
                   storage, capsys)
    assert said in err


@pytest.mark.parametrize("backbone,said", [
    ("nosuchpkg.mod:Net", "cannot import 'nosuchpkg.mod'"),
    ("tests.user_models:Nope", "has no callable 'Nope'"),
    ("json:dumps", "calling it with num_classes"),
])
def test_a_bad_user_model_is_refused_naming_backbones(storage, capsys, backbone, said) -> None:
    """User-model errors used to start with `config:`."""
    err = _refused(["validate", "--backbones", backbone, "--storage", str(storage)],
                   "error: backbones: ", storage, capsys)
    assert said in err


TABLE_A = str(Path(__file__).resolve().parents[1] / "docs/tables/digits-vgg16_w0.0625.parquet")


@pytest.mark.parametrize("argv,field", [
    (["run", "--trials", "abc"], "--trials"),
    (["run", "--trials", "-3"], "budget.trials"),
    (["run", "--epochs", "0"], "budget.epochs"),
    (["run", "--seeds", "1,1"], "seeds"),
    (["run", "--seeds", "a,b"], "--seeds"),
    (["run", "--concurrency", "0"], "concurrency"),
    (["run", "--cpus-per-trial", "0"], "resources.cpus"),
    (["run", "--gpus-per-trial", "1.5"], "resources.gpus"),
    (["run", "--backbones", "vgg17"], "backbones"),
    (["run", "--searchers", "randm"], "searchers"),
    (["run", "--dataset", "cifar11"], "dataset.name"),
    (["run", "--preset", "nope"], "--preset"),
    (["run", "--set", "budget.trialz=3"], "budget.trialz"),
    (["run", "--set", "=3"], "--set"),
    (["run", "--set", "dataset.val_fraction=0.95"], "dataset.val_fraction"),
    (["bench", "--backend", "replay", "--table", TABLE_A, "--set", "replay.space=cube"],
     "replay.space"),
    (["bench", "--backend", "replay", "--table", TABLE_A, "--set",
      "replay.continuation=jump"], "replay.continuation"),
    (["bench", "--backend", "replay", "--table", TABLE_A, "--set",
      "replay.time_budget_s=-5"], "replay.time_budget_s"),
    (["bench", "--backend", "replay", "--table", TABLE_A, "--epochs", "13"], "budget.epochs"),
    (["bench", "--backend", "replay", "--table", "/nonexistent.parquet"], "replay.tables"),
])
def test_values_out_of_range_are_refused_naming_the_field(storage, capsys, argv, field
                                                          ) -> None:
    _refused([*argv, "--storage", str(storage)], field, storage, capsys)


def test_report_warns_of_each_unreadable_file_and_reports_the_rest(tmp_path, capsys
                                                                     ) -> None:
    """Corrupt files among readable ones: the report is written from the rest, and each
    unreadable file is named on one `warning:` line (it was left out without a word)."""
    from service.reports import load
    from tests.backends.replay.tables import emerald_table

    table = emerald_table(tmp_path / "t.parquet")
    storage = tmp_path / "results"
    assert main(["bench", "--backend", "replay", "--table", str(table), "--searchers",
                 "random", "--trials", "2", "--epochs", "2", "--seeds", "0,1,2",
                 "--storage", str(storage), "--name", "exp"]) == 0
    folder = storage / "exp"
    cells = sorted(folder.glob("random__*"))
    (cells[0] / "summary.json").write_bytes(b"\xff\x00 cut")
    (cells[1] / "epochs.parquet").write_bytes(b"PAR1 not really")
    (cells[2] / "epochs.parquet").unlink()
    (cells[2] / "epochs.parquet").mkdir()  # a folder where the curve's file belongs
    capsys.readouterr()
    load.flush_warnings(say=False)
    assert main(["report", str(folder), "--out", str(tmp_path / "out")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("warning: ")]
    assert len(warned) == 3, warned
    assert str(cells[0] / "summary.json") in warned[0] and "left out" in warned[0]
    assert str(cells[1] / "epochs.parquet") in warned[1] and "curve" in warned[1]
    assert str(cells[2] / "epochs.parquet") in warned[2] and "curve" in warned[2]
    cells_csv = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert len(cells_csv) == 2  # the cell without a summary is out, the other two are in


def _csv_table(folder, name: str, rows: list[dict], sidecar: bytes | None = None) -> str:
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    if sidecar is not None:
        (folder / f"{name}.yaml").write_bytes(sidecar)
    return str(path)


GOOD_ROWS = [{"lr": lr, "seed": 0, "epoch": e, "val_acc": 0.5 + lr + e / 100,
              "epoch_time_s": 0.1} for lr in (0.001, 0.01) for e in (1, 2)]


@pytest.mark.parametrize("case", ["epoch_huge", "str_epoch", "str_seed", "latin1_sidecar",
                                  "metric_list", "metrics_int", "one_config", "list_cells",
                                  "dict_cells"])
def test_replay_tables_of_the_wrong_shape_are_one_line(storage, capsys, tmp_path, case
                                                       ) -> None:
    """Columns of the wrong type, an epoch of 10**12 (it allocated terabytes), a sidecar in
    Latin-1 or with a metric that is no name, a table of one configuration, Parquet cells
    holding lists or mappings: each a replay.tables line naming the table."""
    rows = [dict(r) for r in GOOD_ROWS]
    sidecar = None
    if case == "epoch_huge":
        rows[-1]["epoch"] = 10**12
    elif case in ("str_epoch", "str_seed"):
        rows[0][case[4:]] = "two"
    elif case == "latin1_sidecar":
        sidecar = "metric: val_acc\n# r\xe9sum\xe9\n".encode("latin-1")
    elif case == "metric_list":
        sidecar = b"metric: [val_acc]\n"
    elif case == "metrics_int":
        sidecar = b"metrics: 5\n"
    elif case == "one_config":
        rows = [r for r in rows if r["lr"] == 0.001]
    if case in ("list_cells", "dict_cells"):
        frame = pd.DataFrame(rows)
        frame["lr"] = [[v] if case == "list_cells" else {"v": v} for v in frame["lr"]]
        table = str(tmp_path / "t.parquet")
        frame.to_parquet(table)
    else:
        table = _csv_table(tmp_path, "t.csv", rows, sidecar)
    err = _refused(["bench", "--backend", "replay", "--table", table, "--searchers", "random",
                    "--epochs", "1", "--storage", str(storage)], "replay.tables", storage,
                   capsys)
    assert "t.csv'" in err or "t.parquet'" in err or "table 't'" in err


def test_hypera_options_that_are_not_finite_are_refused(storage, capsys) -> None:
    for option in ("temperatures=nan,0.5,0.7,0.8,0.6", "scales=inf,1,1,1,1"):
        _refused(["validate", "--searchers", "hypera", "--set",
                  f"searcher_options.hypera.{option}"], "searcher_options.hypera", storage,
                 capsys)


@pytest.mark.parametrize("shape", ["config_is_a_folder", "config_only", "empty_cell",
                                   "odd_cell_name", "summary_of_the_wrong_types"])
def test_report_of_a_folder_without_results_writes_nothing(storage, capsys, shape) -> None:
    """It wrote a report of empty tables and exited 0 (or, for a summary whose fields have
    the wrong types, crashed)."""
    folder = storage / "exp"
    folder.mkdir()
    if shape == "config_is_a_folder":
        (folder / "experiment_config.json").mkdir()
    else:
        (folder / "experiment_config.json").write_text(json.dumps({"name": "exp"}))
    cell = folder / cell_name(Cell("random", "resnet18@0.0625", 0))
    if shape == "empty_cell":
        cell.mkdir()
    elif shape == "odd_cell_name":
        (folder / "random__").mkdir()
    elif shape == "summary_of_the_wrong_types":
        cell.mkdir()
        (cell / "summary.json").write_text(json.dumps(
            {"searcher": 5, "trials": "x", "backend": "replay"}))
    _refused(["report", str(folder)], "folder", storage, capsys)


def test_report_out_must_be_a_folder_it_can_write(storage, capsys, tmp_path) -> None:
    folder = storage / "exp"
    folder.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    _refused(["report", str(folder), "--out", str(afile)], "--out", storage, capsys)
    _refused(["report", str(folder), "--out", "/proc/nope/report"], "--out", storage, capsys)


@pytest.mark.parametrize("extra,field", [
    (["--epochs", "13"], "--epochs"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**40)], "--seed"),
    (["--episodes", str(10**20)], "--episodes"),
    (["--option", "algo"], "--option"),
    (["--out", "/proc/nope/a.pkl"], "--out"),
    (["--out", "."], "--out"),
    (["--out", "GARBAGE", "--resume"], "--resume"),
])
def test_pretrain_refuses_before_any_episode(storage, capsys, extra, field) -> None:
    out = storage.parent / "agents.pkl"
    if "GARBAGE" in extra:
        out.write_text("garbage\n")
        extra = [str(out) if x == "GARBAGE" else x for x in extra]
    argv = ["pretrain", "--table", TABLE_A, "--out", str(out), "--episodes", "1",
            "--trials", "2", *extra]
    _refused(argv, field, storage, capsys)


@pytest.mark.parametrize("extra,field", [
    (["--set", "space={lr: {loguniform: [0.001, 0.1]}, momentum: {uniform: [0, 0.9]}, "
      "weight_decay: {uniform: [0, 0.1]}}", "--set", "record.points=1000"], "record.points"),
    (["--set", "space.lr={loguniform: [0.001, 0.1]}", "--set", "record.out=AFILE"],
     "record.out"),
    (["--set", "space.lr={loguniform: [0.001, 0.1]}", "--set", "record.out=/proc/nope"],
     "record.out"),
])
def test_record_refuses_what_it_could_not_write_or_hold(storage, capsys, extra, field
                                                        ) -> None:
    """A grid of 10**9 configurations filled the memory; a table folder that is a file or
    cannot be made failed after Ray started."""
    afile = storage.parent / "afile"
    afile.write_text("x")
    extra = [x.replace("AFILE", str(afile)) for x in extra]
    _refused(["record", "--searchers", "random", "--backbones", "resnet18@0.0625", "--epochs",
              "1", "--dataset", "synthetic", "--storage", str(storage), *extra], field,
             storage, capsys)


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", "tensor"])
def test_weights_that_are_no_state_dict_are_refused_before_ray(storage, capsys, content
                                                               ) -> None:
    import torch

    path = storage.parent / "w.pt"
    if content == "tensor":
        torch.save(torch.zeros(3), path)  # loads, but holds no names
    else:
        path.write_bytes(content)
    _refused([*RUN, "--storage", str(storage), "--set", f"weights.resnet18@0.0625={path}"],
             "weights.resnet18@0.0625", storage, capsys)


def test_record_with_the_replay_backend_gives_one_fix(storage, capsys) -> None:
    """It said "set space", and with a space "remove space"."""
    for extra in ([], ["--set", "space.lr={loguniform: [0.001, 0.1]}"]):
        _refused(["record", "--backend", "replay", "--table", TABLE_A, "--searchers", "random",
                  "--epochs", "1", "--storage", str(storage), *extra], "--backend", storage,
                 capsys)


def test_an_exponent_without_a_dot_is_a_number_as_in_yaml_1_2(storage) -> None:
    from service.core.config import load_config, parse_set

    config = storage.parent / "sci.yaml"
    config.write_text("space:\n  lr: {loguniform: [1e-5, 1e-1]}\n  optimizer: [adam, sgd]\n")
    assert load_config(config).search_space["lr"].low == 1e-5
    overrides = parse_set(["space.lr={loguniform: [1e-5, 1e-1]}", "budget.trials=2"])
    assert overrides["space.lr"] == {"loguniform": [1e-5, 1e-1]}


def test_an_exploration_start_that_is_no_probability_is_refused(storage, capsys) -> None:
    _refused(["validate", "--searchers", "emerald", "--set",
              "searcher_options.emerald.epsilon_start=-0.5"], "epsilon_start", storage, capsys)


def test_record_points_per_name_the_value_given(storage, capsys) -> None:
    err = _refused(["validate", "--set", "record.points_per={lr: true}"], "points_per.lr",
                   storage, capsys)
    assert "True must be an integer" in err  # it read true as 1


def test_a_config_that_is_a_device_is_not_read(storage, capsys) -> None:
    err = _refused(["validate", "--config", "/dev/zero"], "--config", storage, capsys)
    assert "not a regular file" in err  # it said "not found"


def test_an_image_folder_of_one_class_is_refused(storage, capsys, tmp_path_factory) -> None:
    """One class folder trains a classifier that cannot be wrong: refused before Ray,
    naming dataset.root (it used to be accepted)."""
    from tests.training.test_imagefolder import write_images

    root = tmp_path_factory.mktemp("data") / "one"
    write_images(root / "train", 3, classes=("cat",))
    err = _refused(["run", "--searchers", "random", "--backbones", "resnet18@0.0625",
                    "--dataset", "imagefolder", "--data-root", str(root), "--storage",
                    str(storage)], "dataset.root", storage, capsys)
    assert "at least 2" in err, err


def test_a_section_the_backend_does_not_read_is_refused(storage, capsys) -> None:
    """A replay section on a real run, and a reward on a replay, were silently ignored."""
    config = storage.parent / "c.yaml"
    config.write_text("replay: {paired: ['random vs optuna']}\nsearchers: [random, optuna]\n")
    err = _refused(["validate", "--config", str(config)], "replay.paired", storage, capsys)
    assert "backend: replay" in err, err
    table = Path(__file__).parents[1] / "docs" / "tables" / "digits-vgg16.parquet"
    config.write_text(f"backend: replay\nreplay: {{tables: [{table}]}}\nreward: {{c_acc: 0.5}}\n")
    _refused(["validate", "--config", str(config)], "reward", storage, capsys)


# The third sweep (issue 30): inputs of the same kinds, not in the lists above.

def _table_case(folder: Path, case: str) -> str:
    rows = [dict(r) for r in GOOD_ROWS]
    sidecar = None
    if case == "text_test_acc":
        rows = [{**r, "test_acc": "abc"} for r in rows]
    elif case == "huge_epoch_time":
        rows = [{**r, "epoch_time_s": 1e308} for r in rows]
    elif case == "one_inf_epoch_time":
        rows[0]["epoch_time_s"] = math.inf
    elif case == "huge_int_hp":
        rows = [{**r, "lr": 2**70 if r["lr"] == 0.001 else 3} for r in rows]
    elif case == "metric_is_epoch":
        sidecar = b"metric: epoch\n"
    elif case == "duplicate_sidecar_key":
        sidecar = b"metric: val_acc\nmetric: val_loss\n"
    if case == "pandas_index":
        path = folder / f"{case}.csv"
        pd.DataFrame(rows).to_csv(path)  # the row index as an unnamed first column
        return str(path)
    return _csv_table(folder, f"{case}.csv", rows, sidecar)


@pytest.mark.parametrize("case,said", [
    ("text_test_acc", "column 'test_acc' must be numeric"),
    ("huge_epoch_time", "column 'epoch_time_s' must be 0 to"),
    ("one_inf_epoch_time", "column 'epoch_time_s' must be 0 to"),
    ("huge_int_hp", "column 'lr' holds 1180591620717411303424"),
    ("metric_is_epoch", "metadata metric 'epoch'"),
    ("duplicate_sidecar_key", "key 'metric' given twice"),
    ("pandas_index", "column 'Unnamed: 0' has no name"),
])
def test_tables_of_the_third_sweep_are_refused_by_column(storage, capsys, tmp_path, case,
                                                         said) -> None:
    """Each ran the replay (a traceback from the report, an overflow writing rows, a
    ranking on the epoch column) or blamed the wrong thing; now one line naming it."""
    table = _table_case(tmp_path, case)
    err = _refused(["bench", "--backend", "replay", "--table", table, "--searchers",
                    "random", "--trials", "2", "--epochs", "1", "--storage", str(storage)],
                   "replay.tables", storage, capsys)
    assert said in err, err


@pytest.mark.parametrize("setting,field", [
    ('seeds=["1"]', "seeds"),
    ("max_parallel_experiments=99999999999999999999", "max_parallel_experiments"),
    ("termination.loss=.inf", "termination.loss"),
    ("reward.size_ref_mb=.inf", "reward.size_ref_mb"),
    ("resources.cpus=1e-300", "resources.cpus"),
    ("resources.cpus=0.00015", "resources.cpus"),
    ("budget.trials='3'", "budget.trials"),
])
def test_numbers_without_bounds_or_of_the_wrong_type(storage, capsys, setting, field) -> None:
    _refused(["validate", "--set", setting], field, storage, capsys)


def test_record_refuses_a_grid_and_samples_together(storage, capsys) -> None:
    """`points_per` was ignored without a word when `samples` was set too."""
    _refused(["validate", "--set", "record.samples=5", "--set", "record.points_per={lr: 3}"],
             "record.points_per", storage, capsys)


def test_every_preset_survives_its_own_round_trip() -> None:
    """A cell rebuilds its config from the stored dump (every field present): a check keyed
    on which fields were given refused every real run once."""
    from service.core.config import build_config, load_config
    from service.core.presets import PRESETS

    for name in PRESETS:
        cfg = load_config(preset=name)
        assert build_config(cfg.model_dump()) == cfg, name
    record = build_config({"record": {"samples": 5}})
    assert build_config(record.model_dump()) == record


def test_ray_address_from_the_environment_is_named_so(storage, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "garbage")
    err = _refused(["validate"], "RAY_ADDRESS", storage, capsys)
    assert "--address" not in err, err


@pytest.mark.parametrize("module,said", [
    ("def build(**kw):\n    return (\n", "importing"),
    ("raise RuntimeError('boom')\n", "boom"),
    ("import sys\nsys.exit(3)\n", "SystemExit"),
    ("def build(**kw):\n    raise SystemExit(4)\n", "SystemExit"),
])
def test_a_user_model_that_fails_on_import_or_exits_is_one_line(storage, capsys, tmp_path,
                                                                monkeypatch, module,
                                                                said) -> None:
    name = f"usermod_{abs(hash(module)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    err = _refused(["validate", "--backbones", f"{name}:build", "--dataset", "synthetic"],
                   "backbones", storage, capsys)
    assert said in err, err


def test_a_warm_start_pickle_cannot_run_code(storage, capsys, tmp_path) -> None:
    """A warm-start file is read with an unpickler that builds only arrays: a pickle that
    calls a function is refused before the call (it ran `os.system` during validate)."""
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "agents.pkl"
    bad.write_bytes(pickle.dumps(Evil()))
    err = _refused(["validate", "--searchers", "emerald", "--set",
                    f"searcher_options.emerald.warm_start={bad}"], "warm_start", storage, capsys)
    assert not marker.exists(), "the pickle ran its call"
    assert "cannot be read as an agents file" in err, err
    _refused(["validate", "--searchers", "emerald", "--set",
              "searcher_options.emerald.warm_start=/dev/null"], "not a regular file",
             storage, capsys)
    good = Path(__file__).resolve().parents[1] / "docs/agents/emerald-digits-vgg16_w0.0625.pkl"
    from rllib_policies import load_agents

    assert load_agents(good)["algo"] == "dqn"  # the shipped agents still load


def test_a_damaged_image_cache_is_rebuilt_not_refused(storage, tmp_path_factory) -> None:
    """The cache is the service's own: cut short or overwritten, it is decoded anew."""
    from service.training.imagefolder import CACHE_DIR, read_image_folder
    from tests.training.test_imagefolder import write_images

    root = tmp_path_factory.mktemp("data") / "imgs"
    write_images(root / "train", 2)
    classes, first = read_image_folder(root, None)
    for damage in (lambda p: p.write_bytes(p.read_bytes()[:300]),
                   lambda p: p.write_text("not a tensor file"),
                   lambda p: __import__("torch").save(__import__("torch").zeros(3), p)):
        (cache,) = (root / CACHE_DIR).glob("train-*.pt")
        damage(cache)
        _, again = read_image_folder(root, None)
        assert again["train"][0].equal(first["train"][0])


def test_class_folders_with_subfolders_are_read_as_torchvision_reads_them(
        tmp_path_factory) -> None:
    from service.training.imagefolder import scan
    from tests.training.test_imagefolder import write_images

    root = tmp_path_factory.mktemp("data") / "nested"
    write_images(root / "train", 2)
    for name in ("cat", "dog"):
        (root / "train" / name / "more").mkdir()
        for image in list((root / "train" / name).glob("*.png"))[:1]:
            image.rename(root / "train" / name / "more" / image.name)
    classes, folders = scan(root)
    assert len(folders[0].files) == 2 * len(classes)


def test_report_warns_of_links_and_pipes_and_reads_a_bom(tmp_path, capsys) -> None:
    """A dangling link or a pipe where summary.json belongs was left out without a word (a
    pipe could have hung the reader); an unknown searcher among the cells no longer
    crashes the report; a config with a UTF-8 BOM is read."""
    import os

    from service.reports import load
    from tests.backends.replay.tables import emerald_table

    table = emerald_table(tmp_path / "t.parquet")
    storage = tmp_path / "results"
    assert main(["bench", "--backend", "replay", "--table", str(table), "--searchers",
                 "random,optuna", "--trials", "2", "--epochs", "2", "--seeds", "0,1",
                 "--storage", str(storage), "--name", "exp"]) == 0
    folder = storage / "exp"
    cells = sorted(folder.glob("*__s*"))
    (cells[0] / "summary.json").unlink()
    (cells[0] / "summary.json").symlink_to(tmp_path / "nowhere.json")
    (cells[1] / "summary.json").unlink()
    os.mkfifo(cells[1] / "summary.json")
    summary = json.loads((cells[2] / "summary.json").read_text())
    (cells[2] / "summary.json").write_text(json.dumps({**summary, "searcher": "nosuch"}))
    config = folder / "experiment_config.json"
    config.write_bytes(b"\xef\xbb\xbf" + config.read_bytes())
    capsys.readouterr()
    load.flush_warnings(say=False)
    assert main(["report", str(folder), "--out", str(tmp_path / "out")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("warning: ")]
    assert any(str(cells[0] / "summary.json") in w for w in warned), warned
    assert any(str(cells[1] / "summary.json") in w for w in warned), warned
    assert (tmp_path / "out" / "comparison.md").is_file()
