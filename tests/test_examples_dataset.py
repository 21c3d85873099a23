"""examples/dataset: the Hugging Face `datasets` recipe and the PyTorch training example run.

Each is skipped where its library is not installed (`datasets` is not an mmx dependency;
torch is the extra mmx[torch]).
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

import mmx.dataset
from mmx.dataset.pair import PairParams, pair_dataset

from .conftest import ROOT
from .pair_fixtures import features_item, session_item, write_features, write_inventory, write_session

EXAMPLES = ROOT / "examples" / "dataset"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    npz, sha = write_features(root / "features", "song", duration_s=30.0)
    items = [features_item(npz, sha)]
    for i in range(3):
        sd = write_session(root, f"S{i}", duration_s=15.0, rate_hz=10.0, cues=[{"track": sha, "at_s": 0.5}],
                           gaps=[(5.0, 7.0)] if i == 1 else [])  # fmt: skip
        items.append(session_item(sd))
    inv = write_inventory(root / "inv.jsonl", items)
    with open(inv, "rb") as fp:
        pair_dataset(fp, root / "ds", params=PairParams(), inventory_name=str(inv))
    return root / "ds"


def test_hf_datasets_recipe_reads_the_windows_mmx_reads(dataset_dir, tmp_path):
    pytest.importorskip("datasets")
    spec = importlib.util.spec_from_file_location("hf_recipe", EXAMPLES / "hf_datasets.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    for split in ("train", "val", None):
        hf = recipe.load_windows(dataset_dir, split, str(tmp_path / "hf-cache"))
        ref = mmx.dataset.open(dataset_dir, split)
        assert len(hf) == len(ref) > 0
        for i in (0, len(ref) - 1):
            w, r = hf[i], ref[i]
            assert w["id"] == ref.row(i)["id"]
            for key in ("audio", "pose", "dynamics", "observed", "beat"):
                np.testing.assert_array_equal(w[key], r[key], err_msg=key)


def test_torch_training_example_runs_an_epoch(dataset_dir, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.setattr(sys, "argv", ["torch_train.py", str(dataset_dir), "--epochs", "1", "--max-steps", "2",
                                      "--workers", "0", "--batch-size", "8"])  # fmt: skip
    runpy.run_path(str(EXAMPLES / "torch_train.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "train /" in out and "epoch 1: train loss" in out and "val loss" in out
