"""mmx.dataset.torch: DataLoaders with 2 workers, each train window exactly once per epoch.

Needs the optional extra mmx[torch]: skipped (pytest.importorskip) where torch is not installed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mmx.dataset  # noqa: E402
from mmx.dataset.pair import PairParams, pair_dataset  # noqa: E402
from mmx.dataset.torch import Augment, IterableWindowDataset, WindowDataset, collate  # noqa: E402
from mmx.events import JOINT_NAMES  # noqa: E402

from .pair_fixtures import features_item, session_item, write_features, write_inventory, write_session  # noqa: E402

LW, RW = JOINT_NAMES.index("leftWrist"), JOINT_NAMES.index("rightWrist")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("torchds")
    npz, sha = write_features(root / "features", "song", duration_s=40.0)
    items = [features_item(npz, sha)]
    for i in range(5):
        sd = write_session(root, f"S{i}", cameras=("cam-1", "cam-2"), duration_s=25.0, rate_hz=10.0,
                           cues=[{"track": sha, "at_s": 0.5}], gaps=[(10.0, 12.0)] if i % 2 else [])  # fmt: skip
        items.append(session_item(sd))
    inv = write_inventory(root / "inv.jsonl", items)
    with open(inv, "rb") as fp:
        pair_dataset(fp, root / "ds", params=PairParams(), inventory_name=str(inv))
    return root / "ds"


def _epoch(loader, ds) -> Counter:
    seen: Counter = Counter()
    for batch in loader:
        b, t = batch["audio"].shape[:2]
        assert batch["pose"].shape == (b, t, 19, 3) and batch["observed"].shape == (b, t)
        assert batch["audio"].dtype == torch.float32 and batch["observed"].dtype == torch.bool
        for j, i in enumerate(batch["index"].tolist()):
            seen[ds.row(i)["id"]] += 1
            if j == 0:  # the batch row is the window it says it is
                w = ds.window(i)
                np.testing.assert_array_equal(batch["audio"][j].numpy(), w["audio"])
                np.testing.assert_array_equal(batch["pose"][j].numpy(), w["pose"])
                np.testing.assert_array_equal(batch["observed"][j].numpy(), w["observed"])
    return seen


def test_map_style_loader_with_2_workers_yields_every_train_window_once_per_epoch(dataset_dir):
    train = WindowDataset(dataset_dir, "train")
    ds = mmx.dataset.open(dataset_dir, "train")
    ids = set(ds.rows.column("id").to_pylist())
    assert len(ids) == len(train) > 100
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, num_workers=2, collate_fn=collate)
    for _ in range(2):
        seen = _epoch(loader, ds)
        assert set(seen) == ids and set(seen.values()) == {1}


def test_iterable_loader_shards_by_worker_each_window_once_per_epoch(dataset_dir):
    stream = IterableWindowDataset(dataset_dir, "train", chunk_windows=16, buffer_windows=32, seed=3)
    ds = mmx.dataset.open(dataset_dir, "train")
    ids = set(ds.rows.column("id").to_pylist())
    loader = torch.utils.data.DataLoader(stream, batch_size=16, num_workers=2, collate_fn=collate)
    orders = []
    for epoch in range(2):
        stream.set_epoch(epoch)
        seen = _epoch(loader, ds)
        assert set(seen) == ids and set(seen.values()) == {1}
        orders.append([*stream.shard(0, 2), *stream.shard(1, 2)])
    a, b = stream.shard(0, 2), stream.shard(1, 2)
    assert a and b and not set(a) & set(b)  # two workers, disjoint shares
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1]) == list(range(len(ds)))
    # two processes of a distributed run split the same windows between them
    halves = [IterableWindowDataset(dataset_dir, "train", seed=3, rank=r, world_size=2).shard(0, 1) for r in (0, 1)]
    assert sorted(halves[0] + halves[1]) == list(range(len(ds))) and not set(halves[0]) & set(halves[1])


def test_mirror_in_a_batch_maps_left_wrist_to_right_wrist_and_x_to_one_minus_x(dataset_dir):
    plain = WindowDataset(dataset_dir, "train")
    flipped = WindowDataset(dataset_dir, "train", augment=Augment(mirror_p=1.0))
    batch, ref = collate([flipped[i] for i in range(4)]), collate([plain[i] for i in range(4)])
    assert batch["mirrored"].all() and not ref["mirrored"].any()
    obs = ref["observed"]
    assert obs.any()
    x = ref["pose"][..., 0]
    torch.testing.assert_close(batch["pose"][..., LW, 0][obs], 1 - x[..., RW][obs])
    torch.testing.assert_close(batch["pose"][..., RW, 0][obs], 1 - x[..., LW][obs])
    torch.testing.assert_close(batch["pose"][..., LW, 1][obs], ref["pose"][..., RW, 1][obs])
    torch.testing.assert_close(batch["audio"], ref["audio"])  # audio stays on its frames
    half = WindowDataset(dataset_dir, "train", augment=Augment(mirror_p=0.5), seed=7)
    flags = [half[i]["mirrored"] for i in range(len(half))]
    assert 0.3 < np.mean(flags) < 0.7
    assert flags == [half[i]["mirrored"] for i in range(len(half))]  # same seed, epoch, index: same draw
    half.set_epoch(1)
    assert flags != [half[i]["mirrored"] for i in range(len(half))]


def test_collate_pads_shorter_windows_as_unobserved():
    def window(t: int, i: int) -> dict:
        return {"audio": torch.ones(t, 3), "pose": torch.ones(t, 19, 3), "dynamics": torch.ones(t, 39),
                "beat": torch.ones(t), "observed": torch.ones(t, dtype=torch.bool), "index": i, "mirrored": False}  # fmt: skip

    batch = collate([window(5, 0), window(3, 1)])
    assert batch["audio"].shape == (2, 5, 3) and batch["pose"].shape == (2, 5, 19, 3)
    assert batch["observed"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert batch["audio"][1, 3:].abs().sum() == 0 and batch["index"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
