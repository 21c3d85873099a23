"""Plot one window of a `mmx pair` dataset: onset envelope with beats over pose kinetic energy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmx.dataset.loader import read_manifest
from mmx.errors import DataError, IOFailure


def _window(directory: Path, index: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from mmx.dataset.reader import open as open_dataset

    ds = open_dataset(directory)
    if len(ds) == 0:
        raise DataError(f"{directory}: the dataset has no windows to preview")
    if not 0 <= index < len(ds):
        raise DataError(f"window {index} does not exist; the dataset has {len(ds)}")
    return ds.row(index), ds.window(index)


def plot_window(directory: str | Path, out_png: str | Path, *, index: int = 0) -> dict[str, Any]:
    """Write a PNG of window ``index`` (0 = first row of ``windows.parquet``).

    Top: the onset envelope (the ``onset_env`` audio column) with the music beats as vertical
    lines. Bottom: the kinetic-energy proxy (last dynamics column, torso lengths²/s²) with
    the same beats, unobserved frames shaded. x axis: track time in seconds. Uses
    matplotlib's Agg backend (no display). Returns the sample row plotted.
    Raises DataError when the dataset is empty or has no onset_env column, IOFailure when the
    PNG cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    directory = Path(directory)
    manifest = read_manifest(directory)
    columns = manifest["arrays"]["audio"]["columns"]
    if "onset_env" not in columns:
        raise DataError("the dataset has no onset_env audio column to plot")
    row, arrays = _window(directory, index)
    fps = float(manifest["frames"]["fps"])
    t = row["track_start_s"] + np.arange(arrays["beat"].shape[0]) / fps
    onset = arrays["audio"][:, columns.index("onset_env")]
    energy = arrays["dynamics"][:, -1]
    beats = t[arrays["beat"] > 0]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    ax1.plot(t, onset, color="tab:blue", lw=1)
    ax1.set_ylabel("onset envelope")
    ax1.set_title(f"{row['session']} · {row['camera']} · {row.get('title') or row['track'][:12]} · "
                  f"{row['track_start_s']:.2f}–{row['track_end_s']:.2f} s")  # fmt: skip
    ax2.plot(t, energy, color="tab:red", lw=1)
    ax2.set_ylabel("kinetic energy (torso²/s²)")
    ax2.set_xlabel("track time (s)")
    for ax in (ax1, ax2):
        for b in beats:
            ax.axvline(b, color="0.4", lw=0.8, ls="--")
    unobserved = ~arrays["observed"]
    if unobserved.any():
        ax2.fill_between(t, 0, 1, where=unobserved, transform=ax2.get_xaxis_transform(), color="0.85",
                         label="unobserved")  # fmt: skip
        ax2.legend(loc="upper right")
    fig.tight_layout()
    try:
        fig.savefig(out_png, dpi=100)
    except OSError as exc:
        raise IOFailure(f"cannot write {out_png}: {exc.strerror}") from None
    finally:
        plt.close(fig)
    return row
