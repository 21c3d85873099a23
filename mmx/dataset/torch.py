"""PyTorch datasets over a `mmx pair` dataset (optional extra ``mmx[torch]``).

    >>> from torch.utils.data import DataLoader
    >>> from mmx.dataset.torch import WindowDataset, collate, Augment
    >>> train = WindowDataset("dataset/", "train", augment=Augment(mirror_p=0.5, max_offset_frames=21))
    >>> loader = DataLoader(train, batch_size=32, shuffle=True, num_workers=2, collate_fn=collate)
    >>> batch = next(iter(loader))
    >>> batch["audio"].shape, batch["pose"].shape, batch["observed"].shape  # (B, T, F), (B, T, 19, 3), (B, T)

- `WindowDataset` (map-style): ``ds[i]`` is window ``i`` of the split as tensors; the
  DataLoader's sampler shuffles and spreads indices over its workers.
- `IterableWindowDataset` (streaming): each DataLoader worker (and each process of a
  distributed run, ``rank`` / ``world_size``) takes its own share of contiguous chunks of
  windows, so every worker reads its own row groups and every window comes out exactly
  once per epoch; a shuffle buffer mixes the chunks.
- `collate`: stacks windows into ``audio`` (B, T, F) float32, ``pose`` (B, T, 19, 3) float32,
  ``dynamics`` (B, T, 39) float32, ``observed`` (B, T) bool, ``beat`` (B, T) float32,
  ``index`` (B,) int64 (the window's index in the split), ``mirrored`` (B,) bool. Windows of
  different lengths are padded at the end with zeros and ``observed`` False.

Both datasets read through `mmx.dataset.open` (memory-mapped Parquet, a small cache per
worker) and augment with `mmx.dataset.augment.Augment` (random offset, mirror, body
normalisation), which keeps audio and pose on the same frames. Randomness comes from
``numpy.random.default_rng((seed, epoch, index))``: the same seed and epoch give the same
batches whatever the number of workers; call ``set_epoch(e)`` before each epoch (with
``persistent_workers=False``, the default, so the workers see it). ``seed=None`` draws from
``torch.initial_seed()``, which a DataLoader with workers changes every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as _TorchDataset
from torch.utils.data import IterableDataset as _TorchIterable
from torch.utils.data import get_worker_info

from mmx.dataset.augment import Augment
from mmx.dataset import reader
from mmx.dataset.reader import Dataset

_FLOAT_KEYS = ("audio", "pose", "dynamics", "beat")
__all__ = ["Augment", "IterableWindowDataset", "WindowDataset", "collate"]


def _source(data: str | Path | Dataset, split: str | None) -> Dataset:
    return data if isinstance(data, Dataset) else reader.open(data, split)


class _Windows:
    """What both datasets share: the split, the augmentation, the seed and epoch."""

    def __init__(self, data: str | Path | Dataset, split: str | None, augment: Augment | None,
                 seed: int | None) -> None:  # fmt: skip
        self.windows = _source(data, split)
        self.augment = augment or Augment()
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's offsets, mirrors and (iterable) order."""
        self.epoch = int(epoch)

    def _base_seed(self) -> int:
        return self.seed if self.seed is not None else torch.initial_seed() % 2**63

    def _item(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng((self._base_seed(), self.epoch, i))
        w = self.augment.apply(self.windows, i, rng)
        out: dict[str, Any] = {k: torch.from_numpy(np.ascontiguousarray(w[k])) for k in _FLOAT_KEYS}
        out["observed"] = torch.from_numpy(np.ascontiguousarray(w["observed"]))
        out["index"] = i
        out["mirrored"] = bool(w["mirrored"])
        return out


class WindowDataset(_Windows, _TorchDataset):
    """Map-style: ``ds[i]`` is window ``i`` of ``split`` as a dict of tensors (see `collate`).

    ``data`` a dataset directory or an opened `mmx.dataset.reader.Dataset`; ``split`` one of
    train, val, test (None: all windows); ``augment`` what to apply (default nothing).
    Raises what `mmx.dataset.open` raises.
    """

    def __init__(self, data: str | Path | Dataset, split: str | None = "train", *,
                 augment: Augment | None = None, seed: int | None = 0) -> None:  # fmt: skip
        _Windows.__init__(self, data, split, augment, seed)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._item(self.windows._index(int(i)))


class IterableWindowDataset(_Windows, _TorchIterable):
    """Streaming: yields the windows of ``split``, each exactly once per epoch across workers.

    The windows, in file order (segment by segment), are cut into chunks of ``chunk_windows``;
    with ``shuffle`` the chunks are permuted per epoch. Chunk k goes to shard
    ``k % (world_size * num_workers)``, shard ``rank * num_workers + worker_id``; inside a
    shard a buffer of ``buffer_windows`` mixes the order. ``rank`` / ``world_size`` shard a
    distributed run (one process per GPU) on top of the DataLoader's workers.
    """

    def __init__(self, data: str | Path | Dataset, split: str | None = "train", *, augment: Augment | None = None,
                 seed: int | None = 0, shuffle: bool = True, chunk_windows: int = 64, buffer_windows: int = 256,
                 rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        if chunk_windows < 1 or buffer_windows < 1:
            raise ValueError("chunk_windows and buffer_windows must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..{world_size - 1}, not {rank}")
        _Windows.__init__(self, data, split, augment, seed)
        self.shuffle, self.chunk_windows, self.buffer_windows = shuffle, chunk_windows, buffer_windows
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.windows)

    def shard(self, worker_id: int = 0, num_workers: int = 1) -> list[int]:
        """The window indices one worker yields this epoch, in its order."""
        n = len(self.windows)
        shards = self.world_size * num_workers
        me = self.rank * num_workers + worker_id
        chunks = [range(a, min(n, a + self.chunk_windows)) for a in range(0, n, self.chunk_windows)]
        order = np.arange(len(chunks))
        if self.shuffle:
            order = np.random.default_rng((self._epoch_seed(), self.epoch)).permutation(len(chunks))
        mine = [i for k in order[me::shards] for i in chunks[int(k)]]
        if not self.shuffle:
            return mine
        rng = np.random.default_rng((self._epoch_seed(), self.epoch, me))
        out: list[int] = []
        buf: list[int] = []
        for i in mine:
            buf.append(i)
            if len(buf) >= self.buffer_windows:
                out.append(buf.pop(int(rng.integers(len(buf)))))
        rng.shuffle(buf)
        return out + buf

    def _epoch_seed(self) -> int:
        # one base for every worker: the chunk permutation must agree across them
        if self.seed is not None:
            return self.seed
        info = get_worker_info()
        return (info.seed - info.id if info is not None else torch.initial_seed()) % 2**63

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in self.shard(wid, nw):
            yield self._item(i)


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack windows into (B, T, …) tensors; pad shorter windows (zeros, observed False)."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    t = max(int(w["audio"].shape[0]) for w in batch)
    out: dict[str, torch.Tensor] = {}
    for key in (*_FLOAT_KEYS, "observed"):
        first = batch[0][key]
        stacked = torch.zeros((len(batch), t, *first.shape[1:]), dtype=first.dtype)
        for b, w in enumerate(batch):
            stacked[b, : w[key].shape[0]] = w[key]
        out[key] = stacked
    out["index"] = torch.tensor([int(w["index"]) for w in batch], dtype=torch.int64)
    out["mirrored"] = torch.tensor([bool(w["mirrored"]) for w in batch], dtype=torch.bool)
    return out
