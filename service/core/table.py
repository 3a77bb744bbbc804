"""Recorded learning curves: the table format, its metadata, and the loaded form replays
read (one array per metric, indexed by configuration, seed and epoch).

A table is Parquet or CSV with one row per (configuration, seed, epoch):

- one column per hyperparameter (any names, any of bool / int / float / str);
- `seed` (int) and `epoch` (int, 1-based, contiguous from 1 for each curve);
- the metric searchers optimise (`val_acc` unless the metadata says otherwise) and
  `epoch_time_s`, the seconds the epoch took (the simulated clock);
- optionally `test_acc` on each curve's last epoch, and any other metric columns.

Metadata (`TableMeta`) travels in the Parquet file under the key `emerald_tune`, or beside the
table as `<table>.yaml` (JSON is YAML): the search space, metric and mode, and where the table
came from. Without a space, one is read from the columns (bools and strings are choices,
integers an int range, positive floats spanning >= 100x a log range, other floats a range).
A table that does not fit gets one `TableError` line naming the column and what is expected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from service.core.api import ConfigError, plain
from service.core.registry import entry
from service.core.space import Dim, SearchSpace, SpaceError

META_KEY = "emerald_tune"
"""The Parquet key-value metadata entry holding `TableMeta` as JSON."""
FORMAT_VERSION = 1

SEED, EPOCH, TIME, TEST = "seed", "epoch", "epoch_time_s", "test_acc"
METRIC_COLUMNS: tuple[str, ...] = (
    "val_acc", "val_loss", "train_acc", "train_loss", "grad_norm", "epoch_time_s",
    "images_per_s", "test_acc", "test_loss", "diverged", "model_size_mb", "num_parameters",
    "infer_ms_per_batch",
)
"""Columns the recorder writes that are never hyperparameters."""
ROW_METRICS: tuple[str, ...] = ("val_acc", "val_loss", "train_acc", "train_loss", "grad_norm",
                                 "model_size_mb", "num_parameters")
"""Recorded metrics a replayed trial reports each epoch, where the table has them (model
size and parameters: what the recorder keeps, or `python -m service.backends.replay.extend`
adds to an older table)."""


class TableError(ConfigError):
    """A table that does not fit the format; `str()` is one line naming the column."""


@dataclass
class TableMeta:
    """What a table says about itself (all optional for tables recorded elsewhere)."""

    space: dict[str, Any] | None = None
    metric: str = "val_acc"
    mode: str = "max"
    dataset: str | None = None
    backbone: str | None = None
    command: str | None = None
    device: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    recorded_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return json.dumps({"format": FORMAT_VERSION, **data, **self.extra}, default=str)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> TableMeta:
        known = {k for k in cls.__dataclass_fields__ if k != "extra"}
        meta = cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known and k != "format"})
        if not isinstance(meta.metric, str) or not meta.metric:
            raise TableError(f"{where}: metadata metric {meta.metric!r} is not a column name")
        metrics = meta.extra.get("metrics", [])
        if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
            raise TableError(f"{where}: metadata metrics must list column names, got "
                             f"{metrics!r}")
        if meta.mode not in ("max", "min"):
            raise TableError(f"{where}: metadata mode {meta.mode!r} is not max or min")
        if meta.space is not None and not isinstance(meta.space, Mapping):
            raise TableError(f"{where}: metadata space must map names to dimensions")
        return meta


MAX_EPOCHS = 100_000
"""The most epochs a table records (the catalogue's epochs bound, service.core.space)."""
MAX_EPOCH_S = 1e7
"""The longest epoch a table may record, seconds (116 days): the simulated clock sums them,
and an infinite or astronomically long epoch would leave every time-based figure empty."""
MAX_VALUE = 1e15
"""The largest magnitude of a numeric hyperparameter (a 64-bit float holds it exactly to
the integer; a replay writes its rows as 64-bit numbers)."""
MAX_CELLS = 200_000_000
"""Values a loaded table may hold (configurations x seeds x epochs x metric columns, 1.6 GB
as float64): a stray epoch of 10**12 allocated terabytes."""


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".yaml")


def read_frame(path: str | Path) -> tuple[Any, TableMeta]:
    """The rows of a table file and its metadata (Parquet's own, else the sidecar)."""
    import pandas as pd

    path = Path(path)
    where = f"table {str(path)!r}"
    if path.is_dir():
        raise TableError(f"{where}: is a folder; give a .parquet or .csv table file")
    if not path.is_file():
        raise TableError(f"{where}: file not found; give a .parquet or .csv table "
                         "(python -m service record writes them)")
    raw: dict[str, Any] = {}
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.read_table(path)
            stored = (pf.schema.metadata or {}).get(META_KEY.encode())
            raw = json.loads(stored) if stored else {}
            frame = pf.to_pandas()
        elif path.suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            raise TableError(f"{where}: unknown suffix {path.suffix!r}; use .parquet or .csv")
    except TableError:
        raise
    except Exception as err:  # a cut or foreign file: one line, not a traceback
        raise TableError(f"{where}: cannot be read ({type(err).__name__}: {err})"[:300]
                         ) from None
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed: ")]
    if unnamed:
        raise TableError(f"{where}: column {unnamed[0]!r} has no name (pandas' row index, "
                         "saved by to_csv without index=False?); drop it or name it")
    side = _sidecar(path)
    if side.is_file():
        import yaml

        from service.core.config import UniqueKeyLoader

        try:
            extra = yaml.load(side.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}
        except UnicodeDecodeError:
            raise TableError(f"{where}: {side.name} is not UTF-8 text; save it as UTF-8"
                             ) from None
        except (yaml.YAMLError, RecursionError) as err:
            problem = getattr(err, "problem", None) or ""
            detail = f" ({problem})" if problem.startswith("key ") else ""
            raise TableError(f"{where}: {side.name} is not valid YAML{detail}") from None
        if not isinstance(extra, dict):
            raise TableError(f"{where}: {side.name} must hold a mapping")
        raw = {**raw, **extra}
    return frame, TableMeta.from_mapping(raw, where)


def write_table(frame: Any, meta: TableMeta, path: str | Path) -> Path:
    """Write rows and metadata as Parquet, atomically (a crash leaves no half table)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           META_KEY: meta.to_json()})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def infer_space(frame: Any, names: Sequence[str]) -> dict[str, Any]:
    """A space read from the columns: choices for bools and strings, ranges for numbers
    (log for positive floats spanning at least two decades)."""
    out: dict[str, Any] = {}
    for name in names:
        values = sorted({plain(v) for v in frame[name].dropna().tolist()}, key=repr)
        if len(values) == 1:
            out[name] = values[0]
        elif all(isinstance(v, (bool, str)) for v in values):
            out[name] = {"choice": sorted(values, key=lambda v: (str(type(v)), v))}
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[name] = {"int": [min(values), max(values)]}
        else:
            numbers = [float(v) for v in values]
            low, high = min(numbers), max(numbers)
            kind = "loguniform" if low > 0 and high / low >= 100 else "uniform"
            out[name] = {kind: [low, high]}
    return out


@dataclass
class ReplayTable:
    """A loaded table: configurations (tuples in `names` order), seeds, and per metric an
    array `[config, seed, epoch - 1]` (NaN past the end of a curve)."""

    name: str
    path: str
    meta: TableMeta
    space: SearchSpace
    names: tuple[str, ...]
    configs: list[tuple[Any, ...]]
    seeds: tuple[int, ...]
    epochs: int
    lengths: np.ndarray
    metrics: dict[str, np.ndarray]
    test: np.ndarray | None

    @property
    def metric(self) -> str:
        return self.meta.metric

    @property
    def mode(self) -> str:
        return self.meta.mode

    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "max" else -1.0

    @cached_property
    def index(self) -> dict[tuple[Any, ...], int]:
        return {c: i for i, c in enumerate(self.configs)}

    @cached_property
    def grid(self) -> dict[str, tuple[Any, ...]]:
        """The recorded values of each hyperparameter, sorted."""
        return {n: tuple(sorted({c[j] for c in self.configs}, key=_order))
                for j, n in enumerate(self.names)}

    def grid_space(self) -> SearchSpace:
        """The space of the recorded values: each searched dimension becomes a choice among
        them, so every searcher searches what the table holds and nothing is snapped (Syne
        Tune gives a tabular blackbox's values as choices too). Numbers are in increasing
        order (PBT then moves to a neighbouring value, HYPERA's positions follow the scale);
        other values keep the space's own order, the one the RL entries' action indices and
        their warm-start files were learned on. Constants and one-value dimensions stay
        constants."""
        dims: list[Dim] = []
        for dim in self.space.dims:
            values = self.grid[dim.name]
            if dim.is_constant:
                dims.append(dim)
            elif len(values) == 1:
                dims.append(Dim(dim.name, "constant", values))
            elif all(_is_number(v) for v in values):
                dims.append(Dim(dim.name, "choice", tuple(sorted(values, key=float))))
            else:  # bools and strings: the declared choices the table recorded
                recorded = Dim(dim.name, "choice", values)
                dims.append(Dim(dim.name, "choice", tuple(
                    c for c in dim.choices if recorded.contains(c))))
        return SearchSpace(tuple(dims))

    @cached_property
    def factorial(self) -> bool:
        return len(self.configs) == math.prod(len(v) for v in self.grid.values())

    def value(self, config: int, epochs: int) -> float:
        """The seed-mean metric of configuration `config` after `epochs` epochs (NaN if
        any seed's curve ended before: it diverged)."""
        return float(np.mean(self.metrics[self.metric][config, :, epochs - 1]))

    def true_values(self, epochs: int) -> np.ndarray:
        """Seed-mean metric of every configuration after `epochs` epochs."""
        return np.mean(self.metrics[self.metric][:, :, epochs - 1], axis=1)

    def optimum(self, epochs: int) -> tuple[float, float]:
        """The best and worst finite seed-mean metric after `epochs` epochs (the known
        optimum regrets are measured against, and the far end of normalised regret)."""
        values = self.true_values(epochs)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise TableError(f"table {self.name!r}: no configuration has a finite "
                             f"{self.metric} at epoch {epochs}")
        best = float(finite.max() if self.sign > 0 else finite.min())
        worst = float(finite.min() if self.sign > 0 else finite.max())
        return best, worst

    def config_dict(self, config: int) -> dict[str, Any]:
        return dict(zip(self.names, self.configs[config], strict=True))

    def snap(self, config: Mapping[str, Any]) -> tuple[int, bool]:
        """The recorded configuration nearest to `config` (log scale on log ranges) and
        whether it differs from `config`. Names the table lacks are a ConfigError."""
        wanted = []
        for name in self.names:
            if name not in config:
                raise KeyError(name)
            wanted.append(plain(config[name]))
        for name in config:
            if name not in self.names:
                raise KeyError(name)
        exact = self.index.get(tuple(wanted))
        if exact is not None:
            return exact, False
        if self.factorial:
            snapped = tuple(self._nearest(n, v) for n, v in zip(self.names, wanted,
                                                                  strict=True))
            found = self.index[snapped]
        else:
            found = int(np.argmin([self._distance(wanted, c) for c in self.configs]))
        return found, not _same(self.configs[found], wanted)

    def _scale(self, name: str, value: Any) -> float:
        dim = self.space[name]
        number = float(value)
        return math.log(number) if dim.kind == "loguniform" and number > 0 else number

    def _nearest(self, name: str, value: Any) -> Any:
        values = self.grid[name]
        dim = self.space[name]
        if not dim.is_numeric_range or isinstance(value, (str, bool)):
            if value in values:
                return value
            raise ValueError(f"{name}={value!r} is not recorded (recorded: {list(values)})")
        target = self._scale(name, value)
        return min(values, key=lambda v: abs(self._scale(name, v) - target))

    def _distance(self, wanted: Sequence[Any], config: Sequence[Any]) -> float:
        total = 0.0
        for name, w, c in zip(self.names, wanted, config, strict=True):
            dim = self.space[name]
            if dim.is_numeric_range and not isinstance(w, (str, bool)):
                span = self._scale(name, dim.high) - self._scale(name, dim.low) or 1.0
                total += ((self._scale(name, w) - self._scale(name, c)) / span) ** 2
            else:
                total += 0.0 if w == c else 1.0
        return total


def _order(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) or isinstance(y, float):
            if isinstance(x, (str, bool)) or isinstance(y, (str, bool)) or \
                    not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def _check_cells(frame: Any, names: tuple[str, ...], where: str) -> None:
    """Hyperparameter cells are scalars (a Parquet column may hold lists or mappings), and
    numbers are finite and within `MAX_VALUE` (results are written as 64-bit numbers)."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    for n in names:
        if frame[n].dtype == object:
            odd = next((v for v in frame[n] if not isinstance(v, (str, bool, int, float,
                                                                   np.generic))
                        and v is not None), None)
            if odd is not None:
                raise TableError(f"{where}: column {n!r} holds {type(odd).__name__} values; "
                                 "give one number, text or true/false per cell")
        column = frame[n]
        if is_numeric_dtype(column) and not is_bool_dtype(column):  # one pass, not per cell
            column = column[column.abs() > MAX_VALUE]  # NaN (an empty cell) never is
        big = next((v for v in column if _is_number(plain(v)) and
                    abs(float(plain(v))) > MAX_VALUE), None)
        if big is not None:
            raise TableError(f"{where}: column {n!r} holds {plain(big)!r}; a hyperparameter "
                             f"is a finite number within +-{MAX_VALUE:.0e}")


def load_table(path: str | Path, name: str | None = None) -> ReplayTable:
    """Read and check a table; every problem is one TableError line."""
    frame, meta = read_frame(path)
    where = f"table {str(path)!r}"
    metric = meta.metric
    for column, expected in ((EPOCH, "the 1-based epoch of each row"),
                             (SEED, "the seed of each curve (0 when there is one)"),
                             (metric, f"the metric to {meta.mode}imise"),
                             (TIME, "the seconds each epoch took (the simulated clock)")):
        if column not in frame.columns:
            raise TableError(f"{where}: column {column!r} is missing; expected {expected}")
    if frame.empty:
        raise TableError(f"{where}: holds no rows (a header only); give one row per "
                         "(configuration, seed, epoch)")
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    for column in (EPOCH, SEED):
        values = frame[column]
        if not is_numeric_dtype(values) or is_bool_dtype(values) or values.isna().any() \
                or not np.all(np.equal(np.mod(values.astype(float), 1), 0)):
            raise TableError(f"{where}: column {column!r} must hold integers")
    if (frame[EPOCH] < 1).any():
        raise TableError(f"{where}: column 'epoch' must start at 1")
    if frame[EPOCH].max() > MAX_EPOCHS or frame[SEED].abs().max() >= 2**63:
        raise TableError(f"{where}: column 'epoch' goes to {frame[EPOCH].max():g}; a table "
                         f"records at most {MAX_EPOCHS} epochs (seeds below 2**63)")

    if metric in (EPOCH, SEED, TIME):
        raise TableError(f"{where}: metadata metric {metric!r} is the table's own "
                         f"bookkeeping, not a result; name a recorded metric such as val_acc")
    for column in dict.fromkeys((metric, TIME, *ROW_METRICS, TEST)):
        if column in frame.columns and (not is_numeric_dtype(frame[column])
                                        or is_bool_dtype(frame[column])):
            raise TableError(f"{where}: column {column!r} must be numeric")
    if np.isinf(frame[metric].astype(float)).any():
        raise TableError(f"{where}: column {metric!r} holds an infinite value; give finite "
                         "values (NaN ends a diverged curve)")
    if not frame[TIME].between(0, MAX_EPOCH_S).all():  # NaN and inf fail too
        raise TableError(f"{where}: column 'epoch_time_s' must be 0 to {MAX_EPOCH_S:.0e} "
                         "seconds on every row (the simulated clock adds them)")
    if meta.space is not None:
        names = tuple(meta.space)
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise TableError(f"{where}: column {missing[0]!r} of the metadata's space is "
                             "missing; give one column per hyperparameter")
        reserved = {EPOCH, SEED, metric, *METRIC_COLUMNS, *meta.extra.get("metrics", [])}
        unnamed = [c for c in frame.columns if c not in reserved and c not in names]
        if unnamed:  # it would split curves the space cannot tell apart
            raise TableError(f"{where}: column {unnamed[0]!r} is not in the metadata's space "
                             f"({', '.join(names)}); add it to the space, or name it a "
                             "metric in the metadata (metrics: [...]), or drop the column")
        _check_cells(frame, names, where)
        raw_space = dict(meta.space)
    else:
        reserved = {EPOCH, SEED, metric, *METRIC_COLUMNS, *meta.extra.get("metrics", [])}
        names = tuple(c for c in frame.columns if c not in reserved)
        _check_cells(frame, names, where)
        raw_space = infer_space(frame, names)
    if not names:
        raise TableError(f"{where}: no hyperparameter columns; give one column per "
                         "hyperparameter besides seed, epoch and the metrics")
    for n in names:
        if frame[n].isna().any():
            raise TableError(f"{where}: column {n!r} has empty cells; every row needs its "
                             "hyperparameter values")

    try:
        space = SearchSpace.from_dict(raw_space, free=True)
    except SpaceError as err:
        raise TableError(f"{where}: {err}") from None
    frame = frame.sort_values([*names, SEED, EPOCH], kind="stable")
    seeds = tuple(sorted(int(s) for s in frame[SEED].unique()))
    epochs = int(frame[EPOCH].max())
    keys = config_keys(frame, names)
    configs = list(dict.fromkeys(keys))
    cindex = {c: i for i, c in enumerate(configs)}
    sindex = {s: i for i, s in enumerate(seeds)}
    columns = [c for c in (*ROW_METRICS, TIME) if c in frame.columns]
    if metric not in columns:
        columns.insert(0, metric)
    if len(configs) * len(seeds) * epochs * len(columns) > MAX_CELLS:
        raise TableError(f"{where}: {len(configs)} configurations x {len(seeds)} seeds x "
                         f"{epochs} epochs is more than a replay holds in memory "
                         f"({MAX_CELLS:.0e} values); give a smaller table")
    arrays = {c: np.full((len(configs), len(seeds), epochs), np.nan) for c in columns}
    test = np.full((len(configs), len(seeds)), np.nan) if TEST in frame.columns else None
    ci = np.array([cindex[k] for k in keys])
    si = frame[SEED].map(sindex).to_numpy()
    ei = frame[EPOCH].astype(int).to_numpy() - 1
    seen = np.zeros((len(configs), len(seeds), epochs), dtype=int)
    np.add.at(seen, (ci, si, ei), 1)
    if (seen > 1).any():
        c, s, e = (int(x[0]) for x in np.nonzero(seen > 1))
        raise TableError(f"{where}: configuration {dict(zip(names, configs[c], strict=True))} "
                         f"seed {seeds[s]} has epoch {e + 1} twice; one row per epoch")
    for column in columns:
        arrays[column][ci, si, ei] = frame[column].astype(float).to_numpy()
    lengths = seen.sum(axis=2)
    if (lengths == 0).any():
        c, s = (int(x[0]) for x in np.nonzero(lengths == 0))
        raise TableError(f"{where}: configuration {dict(zip(names, configs[c], strict=True))} "
                         f"has no curve for seed {seeds[s]}; every configuration needs every "
                         "seed")
    if (np.diff(seen, axis=2) > 0).any():  # each curve's epochs: a prefix 1..length
        raise TableError(f"{where}: column 'epoch' must run 1, 2, ... without gaps on each "
                         "curve")
    if test is not None:
        last = lengths - 1
        values = frame[TEST].astype(float).to_numpy()
        at_last = ei == last[ci, si]
        test[ci[at_last], si[at_last]] = values[at_last]
    for n in names:
        dim: Dim = space[n]
        for value in {c[names.index(n)] for c in configs}:
            if not dim.contains(value):
                raise TableError(f"{where}: column {n!r} holds {value!r}, outside the space "
                                 f"{raw_space[n]}")
    return ReplayTable(name or Path(path).stem, str(path), meta, space, names, configs, seeds,
                       epochs, lengths, arrays, test)


_CACHE: dict[tuple[str, float, int], ReplayTable] = {}


def config_keys(frame: Any, names: Sequence[str]) -> list[tuple[Any, ...]]:
    """Each row's configuration as the table keys it (`ReplayTable.configs`)."""
    return [tuple(plain(v) for v in row) for row in frame[list(names)].itertuples(index=False)]


def cached_table(path: str | Path) -> ReplayTable:
    """`load_table`, once per file version in this process (validation, then each cell)."""
    file = Path(path).expanduser()
    try:
        stat = file.stat()
    except OSError:
        return load_table(file)  # raises the one-line "not found"
    key = (str(file.resolve()), stat.st_mtime, stat.st_size)
    if key not in _CACHE:
        _CACHE[key] = load_table(file)
    return _CACHE[key]


SPACES: tuple[str, ...] = ("grid", "continuous")
"""What a replayed plan searches: the table's recorded values as choices, or its ranges."""


class ReplayError(RuntimeError):
    """A plan that cannot run on a table (a name the table lacks, a value it never
    recorded); `str()` is one line."""


def plan_space(name: str, table: ReplayTable, space: str = "grid") -> SearchSpace:
    """The space entry `name` searches on `table`: the recorded values as choices, numbers
    in order ("grid"), or the table's ranges ("continuous", and PB2 in either mode: see
    `Entry.continuous_space`: PB2 fits a GP over continuous bounds, so its suggestions are
    snapped to the grid instead, counted)."""
    if space not in SPACES:
        raise ReplayError(f"replay.space: unknown space {space!r}; use one of "
                          f"{', '.join(SPACES)}")
    if space == "continuous" or entry(name).continuous_space:
        return table.space
    return table.grid_space()
