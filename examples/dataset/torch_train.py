#!/usr/bin/env python3
"""Train a small audio → pose model on a `mmx pair` dataset with PyTorch.

    pip install 'mmx[torch]'        # and a dataset made by `mmx pair` (see README.md)
    python examples/dataset/torch_train.py dataset/ [--epochs 3] [--workers 2] [--max-steps N]

A DataLoader with ``--workers`` worker processes reads the train split through
`mmx.dataset.torch.WindowDataset` with the augmentations that keep audio and pose aligned:
a random window offset (±0.5 s), the left/right mirror (half of the windows) and body-scale
normalisation (root-centred, in torso lengths). Batches are ``audio`` (B, T, F) and ``pose``
(B, T, 19, 3) with the ``observed`` mask (B, T). The model (two 1-D convolutions and a GRU)
predicts each frame's 19 joint positions from the music around it; the loss is the mean
squared error over observed frames and joints seen with confidence > 0, so frames without
a real pose sample teach nothing. Validation (if the dataset has a val split) uses no
augmentation but the body normalisation. One line per epoch on stdout.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import mmx.dataset
from mmx.dataset.torch import Augment, WindowDataset, collate


class AudioToPose(nn.Module):
    """(B, T, F) audio features → (B, T, 19, 2) joint positions in body units."""

    def __init__(self, n_audio: int, hidden: int = 64) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(n_audio, hidden, 5, padding=2), nn.GELU(),
                                  nn.Conv1d(hidden, hidden, 5, padding=2), nn.GELU())  # fmt: skip
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 19 * 2)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        h = self.conv(audio.transpose(1, 2)).transpose(1, 2)
        h, _ = self.gru(h)
        return self.out(h).view(audio.shape[0], audio.shape[1], 19, 2)


def masked_mse(pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean squared error over observed frames and joints with confidence > 0."""
    target, conf = batch["pose"][..., :2], batch["pose"][..., 2]
    mask = (batch["observed"][..., None] & (conf > 0)).float()
    err = ((pred - target) ** 2).sum(-1) * mask
    return err.sum() / mask.sum().clamp(min=1.0)


def standardiser(train: WindowDataset, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and std of the audio features over the first ``n`` train windows."""
    audio = torch.cat([train[i]["audio"] for i in range(min(n, len(train)))])
    return audio.mean(0), audio.std(0).clamp(min=1e-3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=0, help="stop each epoch after this many batches (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    fps = mmx.dataset.open(args.dataset).manifest["frames"]["fps"]
    aug = Augment(max_offset_frames=round(0.5 * fps), mirror_p=0.5, normalize_body=True)
    train = WindowDataset(args.dataset, "train", augment=aug, seed=args.seed)
    val = WindowDataset(args.dataset, "val", augment=Augment(normalize_body=True), seed=args.seed)
    if not len(train):
        raise SystemExit(f"{args.dataset} has no train windows")
    mean, std = standardiser(train)
    model = AudioToPose(int(mean.numel()))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        collate_fn=collate, drop_last=len(train) > args.batch_size)  # fmt: skip
    val_loader = DataLoader(val, batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate)
    print(f"{len(train)} train / {len(val)} val windows of {train.windows.window_frames} frames; "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; {args.workers} loader workers")  # fmt: skip
    for epoch in range(args.epochs):
        train.set_epoch(epoch)
        model.train()
        t0, total, steps, mirrored = time.perf_counter(), 0.0, 0, 0
        for batch in loader:
            loss = masked_mse(model((batch["audio"] - mean) / std), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
            mirrored += int(batch["mirrored"].sum())
            if args.max_steps and steps >= args.max_steps:
                break
        line = f"epoch {epoch + 1}: train loss {total / max(steps, 1):.4f} over {steps} batches ({mirrored} windows mirrored)"
        if len(val):
            model.eval()
            with torch.no_grad():
                losses = [float(masked_mse(model((b["audio"] - mean) / std), b)) for b in val_loader]
            line += f", val loss {sum(losses) / len(losses):.4f}"
        print(f"{line}; {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
