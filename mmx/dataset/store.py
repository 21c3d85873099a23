"""The dataset on disk: Apache Parquet segments and a windows index, written by pyarrow.

Layout of a dataset directory ``DIR``:

- ``DIR/segments/<name>.parquet``: one file per segment (session × camera × cue), one row per
  audio frame of the cue's span, in frame order, stored once however many windows cover it:
  ``frame`` int32 (track frame index k, at ``k * hop_length / sr`` s), ``time_s`` float64
  (track time), ``audio`` fixed_size_list<float32>[F], ``pose`` fixed_size_list<
  fixed_size_list<float32>[3]>[19] (x, y, confidence; zeros where unobserved), ``speed`` and
  ``accel`` fixed_size_list<float32>[19] (image units/s, /s²), ``kinetic_energy`` float32
  (image units²/s²), ``observed`` bool, ``beat`` float32. Row groups of `ROW_GROUP_FRAMES`
  frames, so reading one window decodes at most two of them.
- ``DIR/windows.parquet``: one row per window (`WINDOW_SCHEMA`): which segment, the first row
  in it, how many frames, the split, the observed share, the window's torso length.

Every file is written with the fixed options of `WRITE_OPTIONS` and without timestamps, so
the same rows give the same bytes (for one pyarrow version: parquet's ``created_by`` names
it). Nothing here is mmx-only: pyarrow, polars or DuckDB read the files as they are.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from mmx.events import JOINT_NAMES

N_JOINTS = len(JOINT_NAMES)
#: Frames per row group of a segment (≈ 11.9 s at 22050/512 fps): a 5 s window (215 frames)
#: touches one or two row groups.
ROW_GROUP_FRAMES = 512
#: Rows per row group of windows.parquet.
WINDOW_ROW_GROUP = 65_536
_FLOAT_COLUMNS = ["time_s", "audio", "pose", "speed", "accel", "kinetic_energy", "beat"]
#: Fixed writer options: zstd level 1 (level 3 saves 2 % of the bytes for 10 % more CPU per
#: window written; bench/pair_bench.py), floats byte-stream-split (their exponent bytes then
#: compress), plain encoding for floats (no dictionary), no page index; min/max statistics for
#: the columns a query filters on (frame and time ranges, every column of windows.parquet),
#: not for the frame streams, whose min/max no query uses.
WRITE_OPTIONS: dict[str, Any] = {
    "version": "2.6",
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": ["session", "camera", "track", "title", "split", "segment"],
    "use_byte_stream_split": _FLOAT_COLUMNS + ["track_start_s", "track_end_s", "observed_share", "torso_length"],
    "write_statistics": ["frame", "time_s", "id", "split", "session", "camera", "track", "title", "segment", "row",
                         "frames", "start_frame", "track_start_s", "track_end_s", "observed_share", "torso_length"],
    "data_page_version": "1.0",
    "store_schema": True,
    "write_page_index": False,
}


def segment_schema(n_audio: int, audio_columns: list[str], meta: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of a segment file; ``meta`` goes into its key-value metadata as ``mmx``."""
    f32 = pa.float32()
    return pa.schema(
        [
            pa.field("frame", pa.int32()),
            pa.field("time_s", pa.float64()),
            pa.field("audio", pa.list_(f32, n_audio), metadata={"columns": orjson.dumps(audio_columns)}),
            pa.field("pose", pa.list_(pa.list_(f32, 3), N_JOINTS),
                     metadata={"joints": orjson.dumps(list(JOINT_NAMES)), "channels": b'["x","y","confidence"]'}),
            pa.field("speed", pa.list_(f32, N_JOINTS), metadata={"units": b"image units/s"}),
            pa.field("accel", pa.list_(f32, N_JOINTS), metadata={"units": b"image units/s^2"}),
            pa.field("kinetic_energy", f32, metadata={"units": b"image units^2/s^2"}),
            pa.field("observed", pa.bool_()),
            pa.field("beat", f32),
        ],
        metadata={"mmx": orjson.dumps(meta, option=orjson.OPT_SORT_KEYS)},
    )  # fmt: skip


WINDOW_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("split", pa.string()),
    pa.field("session", pa.string()),
    pa.field("camera", pa.string()),
    pa.field("track", pa.string()),
    pa.field("title", pa.string()),
    pa.field("segment", pa.string()),  # file name in segments/ without .parquet
    pa.field("row", pa.int64()),  # first row of the window in the segment
    pa.field("frames", pa.int32()),  # T
    pa.field("start_frame", pa.int64()),  # track frame of the first row
    pa.field("track_start_s", pa.float64()),
    pa.field("track_end_s", pa.float64()),
    pa.field("observed_share", pa.float64()),
    pa.field("torso_length", pa.float64()),  # normalized image units; dynamics are divided by it on read
])  # fmt: skip
WINDOW_COLUMNS = tuple(WINDOW_SCHEMA.names)


def segment_name(session: str, camera: str, track: str, cue_line: int) -> str:
    """A file-system-safe, unique file stem for a segment: readable parts plus a short hash."""
    raw = f"{session}\0{camera}\0{track}\0{cue_line}"

    def safe(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", s)[:48]

    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    return f"{safe(session)}.{safe(camera)}.{track[:12]}.{cue_line}.{digest}"


def _fsl(values: np.ndarray, width: int) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)


def segment_batch(schema: pa.Schema, frames: np.ndarray, fps: float, arrays: dict[str, np.ndarray]) -> pa.RecordBatch:
    """One record batch of a segment: ``frames`` (n,) track frame indices, ``arrays`` audio (n, F),
    pose (n, 19, 3), speed (n, 19), accel (n, 19), kinetic_energy (n,), observed (n,), beat (n,)."""
    pose = arrays["pose"].astype(np.float32, copy=False)
    cols = [
        pa.array(frames.astype(np.int32)),
        pa.array(frames / fps),
        _fsl(np.ascontiguousarray(arrays["audio"], dtype=np.float32), schema.field("audio").type.list_size),
        pa.FixedSizeListArray.from_arrays(_fsl(np.ascontiguousarray(pose), 3), N_JOINTS),
        _fsl(np.ascontiguousarray(arrays["speed"], dtype=np.float32), N_JOINTS),
        _fsl(np.ascontiguousarray(arrays["accel"], dtype=np.float32), N_JOINTS),
        pa.array(arrays["kinetic_energy"].astype(np.float32)),
        pa.array(arrays["observed"].astype(bool)),
        pa.array(arrays["beat"].astype(np.float32)),
    ]
    return pa.RecordBatch.from_arrays(cols, schema=schema)


class SegmentWriter:
    """Write a segment in pieces; the file appears under its name only when closed whole.

    A worker killed mid-write leaves at most ``<name>.parquet.tmp-<pid>``; whoever redoes the
    task writes the same bytes under the final name (`os.replace` is atomic).
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        self.writer = pq.ParquetWriter(self.tmp, schema, **_options(schema))
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        # row groups of exactly ROW_GROUP_FRAMES rows whatever the batch sizes: the bytes
        # must not depend on how the caller chunked its work
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= ROW_GROUP_FRAMES:
            # every whole row group in one call (one copy of the rest, not one per group)
            self._flush(self.pending_rows - self.pending_rows % ROW_GROUP_FRAMES)

    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self.pending)
        self.writer.write_table(table.slice(0, rows), row_group_size=min(rows, ROW_GROUP_FRAMES))
        rest = table.slice(rows)
        self.pending = rest.combine_chunks().to_batches() if rest.num_rows else []
        self.pending_rows = rest.num_rows

    def close(self) -> None:
        if self.pending_rows:
            self._flush(self.pending_rows)
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _options(schema: pa.Schema) -> dict[str, Any]:
    names = set(schema.names)
    opts = dict(WRITE_OPTIONS)
    opts["use_dictionary"] = [c for c in WRITE_OPTIONS["use_dictionary"] if c in names]
    opts["use_byte_stream_split"] = [c for c in WRITE_OPTIONS["use_byte_stream_split"] if c in names]
    opts["write_statistics"] = [c for c in WRITE_OPTIONS["write_statistics"] if c in names]
    return opts


class WindowsWriter:
    """Append window rows (dicts with `WINDOW_COLUMNS`) to ``windows.parquet`` in fixed row groups."""

    def __init__(self, path: Path, meta: dict[str, Any] | None = None) -> None:
        schema = WINDOW_SCHEMA
        if meta is not None:
            schema = schema.with_metadata({"mmx": orjson.dumps(meta, option=orjson.OPT_SORT_KEYS)})
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema, **_options(schema))
        # rows waiting for a whole row group, held as Arrow tables (~150 bytes a row, where
        # the dicts take ~1 kB): memory stays small however many windows a row group holds
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.count = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.pending.append(pa.Table.from_pylist(rows, schema=self.schema))
        self.pending_rows += len(rows)
        self.count += len(rows)
        if self.pending_rows >= WINDOW_ROW_GROUP:
            self._flush(self.pending_rows - self.pending_rows % WINDOW_ROW_GROUP)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.pending) if self.pending else self.schema.empty_table()
        self.writer.write_table(table.slice(0, rows), row_group_size=max(1, min(rows, WINDOW_ROW_GROUP)))
        rest = table.slice(rows)
        self.pending = [rest.combine_chunks()] if rest.num_rows else []
        self.pending_rows = rest.num_rows

    def close(self) -> None:
        if self.pending_rows or self.count == 0:
            self._flush(self.pending_rows)  # an empty dataset still gets a readable, empty table
        self.pending = []
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()
