"""Random access to the windows of a `mmx pair` dataset, as numpy arrays, memory-mapped.

    >>> import mmx.dataset
    >>> ds = mmx.dataset.open("dataset/", "train")
    >>> w = ds[0]
    >>> w["audio"].shape, w["pose"].shape, w["observed"].shape   # (T, F), (T, 19, 3), (T,)

Only the windows index (``windows.parquet``, one small row per window) is held in memory.
Segment files are opened through `pyarrow.memory_map` and decoded one row group
(`mmx.dataset.store.ROW_GROUP_FRAMES` frames) at a time into a small LRU cache, so memory
stays bounded whatever the size of the split; reading windows in index order decodes every
row group once.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmx.dataset.loader import SPLITS, read_manifest
from mmx.dataset.store import N_JOINTS
from mmx.errors import DataError, InputMissingError

#: The arrays of a window, in the order of `load`'s result.
ARRAY_KEYS = ("audio", "pose", "dynamics", "observed", "beat")
_COLUMNS = ["audio", "pose", "speed", "accel", "kinetic_energy", "observed", "beat"]


def _flat(column: pa.ChunkedArray, depth: int) -> np.ndarray:
    parts = []
    for chunk in column.chunks:
        for _ in range(depth):
            chunk = chunk.flatten()
        parts.append(chunk.to_numpy(zero_copy_only=False))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _Segments:
    """Open segment files (memory-mapped) and decoded row groups, both in bounded LRU caches."""

    def __init__(self, root: Path, *, max_files: int = 64, max_groups: int = 32) -> None:
        self.root = root
        self.max_files, self.max_groups = max_files, max_groups
        self._reset()

    def _reset(self) -> None:
        self.pid = os.getpid()  # caches are not shared across fork (DataLoader workers)
        self.files: OrderedDict[str, tuple[pq.ParquetFile, int]] = OrderedDict()
        self.groups: OrderedDict[tuple[str, int], dict[str, np.ndarray]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # open memory maps do not pickle (DataLoader workers started with spawn); reopen there
        return {"root": self.root, "max_files": self.max_files, "max_groups": self.max_groups}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def _file(self, name: str) -> tuple[pq.ParquetFile, int]:
        if self.pid != os.getpid():
            self._reset()
        hit = self.files.get(name)
        if hit is not None:
            self.files.move_to_end(name)
            return hit
        path = self.root / "segments" / f"{name}.parquet"
        try:
            pf = pq.ParquetFile(pa.memory_map(str(path), "r"))
        except FileNotFoundError:
            raise InputMissingError(f"segment {path} is missing") from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{path}: not a readable Parquet segment ({exc})") from None
        rows = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else 1
        self.files[name] = (pf, rows)
        while len(self.files) > self.max_files:
            self.files.popitem(last=False)
        return pf, rows

    def _group(self, name: str, pf: pq.ParquetFile, g: int) -> dict[str, np.ndarray]:
        key = (name, g)
        hit = self.groups.get(key)
        if hit is not None:
            self.groups.move_to_end(key)
            return hit
        table = pf.read_row_group(g, columns=_COLUMNS, use_threads=False)
        n = table.num_rows
        arrays = {
            "audio": _flat(table["audio"], 1).reshape(n, -1),
            "pose": _flat(table["pose"], 2).reshape(n, N_JOINTS, 3),
            "speed": _flat(table["speed"], 1).reshape(n, N_JOINTS),
            "accel": _flat(table["accel"], 1).reshape(n, N_JOINTS),
            "kinetic_energy": _flat(table["kinetic_energy"], 0),
            "observed": _flat(table["observed"], 0).astype(bool, copy=False),
            "beat": _flat(table["beat"], 0),
        }
        self.groups[key] = arrays
        while len(self.groups) > self.max_groups:
            self.groups.popitem(last=False)
        return arrays

    def frames(self, name: str, row: int, count: int) -> dict[str, np.ndarray]:
        """Rows [row, row + count) of a segment (clipped to the file), copied into fresh arrays."""
        pf, per = self._file(name)
        total = pf.metadata.num_rows
        lo, hi = max(0, row), min(total, row + count)
        if hi <= lo:
            raise DataError(f"segment {name}: rows {row}..{row + count} lie outside its {total} rows")
        parts = []
        for g in range(lo // per, (hi - 1) // per + 1):
            arrays = self._group(name, pf, g)
            a, b = max(lo, g * per) - g * per, min(hi, (g + 1) * per) - g * per
            parts.append({k: v[a:b] for k, v in arrays.items()})
        if len(parts) == 1:
            return {k: v.copy() for k, v in parts[0].items()}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _split_extents(rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the first row and the end row spanned by all windows of its segment and split."""
    n = rows.num_rows
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    seg = rows.column("segment").to_pylist()
    split = rows.column("split").to_pylist()
    _, group = np.unique(np.array([f"{a}\0{b}" for a, b in zip(seg, split, strict=True)]), return_inverse=True)
    row = rows.column("row").to_numpy().astype(np.int64)
    end = row + rows.column("frames").to_numpy().astype(np.int64)
    lo = np.full(group.max() + 1, np.iinfo(np.int64).max)
    hi = np.zeros(group.max() + 1, dtype=np.int64)
    np.minimum.at(lo, group, row)
    np.maximum.at(hi, group, end)
    return lo[group], hi[group]


class Dataset(Sequence):
    """The windows of one split (or all of them): ``ds[i]`` is a dict of numpy arrays.

    ``ds[i]`` → ``audio`` (T, F) float32, ``pose`` (T, 19, 3) float32, ``dynamics`` (T, 39)
    float32 in torso lengths (speed, accel, kinetic energy; see the manifest), ``observed`` (T,)
    bool, ``beat`` (T,) float32. ``ds.rows`` is the windows index (a `pyarrow.Table`),
    ``ds.row(i)`` one row as a dict, ``ds.manifest`` the manifest.
    """

    def __init__(self, root: Path, rows: pa.Table, manifest: dict[str, Any]) -> None:
        self.root = root
        self.rows = rows
        self.manifest = manifest
        self._segment = rows.column("segment").to_pylist()
        self._row = rows.column("row").to_numpy()
        self._frames = rows.column("frames").to_numpy()
        self._scale = rows.column("torso_length").to_numpy()
        self._lo, self._hi = _split_extents(rows)
        self._segments = _Segments(root)
        self.window_frames = int(manifest["frames"]["window_frames"] or 0)

    def __len__(self) -> int:
        return self.rows.num_rows

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:  # type: ignore[override]
        return self.window(i)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(self)):
            yield self.window(i)

    def row(self, i: int) -> dict[str, Any]:
        """Window ``i``'s row of the index (id, session, camera, track, start_frame, …)."""
        return {k: v[0] for k, v in self.rows.slice(self._index(i), 1).to_pydict().items()}

    def _index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows")
        return int(i) % n

    def torso_length(self, i: int) -> float:
        """Window ``i``'s body scale (normalized image units), the divisor of its dynamics."""
        return float(self._scale[self._index(i)])

    def segment_bounds(self, i: int) -> tuple[int, int]:
        """(first, end) rows of window ``i``'s segment that an offset window may cover: the
        span of the windows of the same segment and split, so a moved window never takes
        frames of another split (``--split-by time`` puts three splits in one segment)."""
        i = self._index(i)
        return int(self._lo[i]), int(self._hi[i])

    def window(self, i: int, offset: int = 0) -> dict[str, np.ndarray]:
        """Window ``i``, its start moved by ``offset`` frames (clipped to `segment_bounds`;
        the body scale stays the window's own). Audio and pose come from the same frames."""
        i = self._index(i)
        t = int(self._frames[i])
        row = int(self._row[i]) + int(offset)
        if offset:
            lo, hi = self.segment_bounds(i)
            row = min(max(lo, row), hi - t)
        f = self._segments.frames(self._segment[i], row, t)
        if f["audio"].shape[0] != t:
            raise DataError(f"segment {self._segment[i]}: window {i} needs {t} frames, the file has "
                            f"{f['audio'].shape[0]} from row {row}")  # fmt: skip
        k = np.float32(1.0 / self._scale[i])
        dyn = np.empty((t, 2 * N_JOINTS + 1), dtype=np.float32)
        dyn[:, :N_JOINTS], dyn[:, N_JOINTS:-1], dyn[:, -1] = f["speed"], f["accel"], f["kinetic_energy"]
        dyn *= k
        dyn[:, -1] *= k
        return {"audio": f["audio"], "pose": f["pose"], "dynamics": dyn, "observed": f["observed"], "beat": f["beat"]}

    def split(self, name: str) -> Dataset:
        """The windows of one split (``train``, ``val``, ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {name!r}")
        import pyarrow.compute as pc

        return Dataset(self.root, self.rows.filter(pc.equal(self.rows["split"], name)), self.manifest)


def open(directory: str | Path, split: str | None = None) -> Dataset:  # noqa: A001  (mmx.dataset.open)
    """Open a dataset written by ``mmx pair`` for random access to its windows.

    ``split`` keeps one of ``train``, ``val``, ``test`` (None: every window, in file order).
    Raises ValueError for an unknown split, InputMissingError when the directory or its
    windows.parquet is missing, DataError when it is not a Parquet dataset (format 2).
    """
    root = Path(directory)
    manifest = read_manifest(root)
    if manifest.get("format_version") != 2:
        raise DataError(f"{root}: dataset format {manifest.get('format_version')}, this mmx reads format 2 "
                        "(Parquet segments)", hint="run `mmx pair` again to rewrite it")  # fmt: skip
    path = root / "windows.parquet"
    try:
        rows = pq.read_table(pa.memory_map(str(path), "r"))
    except FileNotFoundError:
        raise InputMissingError(f"{path} is missing") from None
    ds = Dataset(root, rows, manifest)
    return ds if split is None else ds.split(split)


def load(directory: str | Path, split: str = "train") -> dict[str, Any]:
    """Read one whole split into memory (small datasets, tests): a dict of stacked arrays.

    ``audio`` (N, T, F), ``pose`` (N, T, 19, 3), ``dynamics`` (N, T, 39), ``observed``
    (N, T), ``beat`` (N, T), plus ``samples`` (the N index rows as dicts) and ``manifest``.
    For anything large use `open`, which never holds a whole split.
    """
    ds = open(directory, split)
    m = ds.manifest["arrays"]
    out: dict[str, Any] = {}
    windows = [ds.window(i) for i in range(len(ds))]
    for key in ARRAY_KEYS:
        if windows:
            out[key] = np.stack([w[key] for w in windows])
        else:
            shape = [0 if d == "N" else (d or 0) for d in m[key]["shape"]]
            out[key] = np.zeros(shape, dtype=np.dtype(m[key]["dtype"]))
    out["samples"] = ds.rows.to_pylist()
    out["manifest"] = ds.manifest
    return out
