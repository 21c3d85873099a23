"""`mmx pair`: pair recorded pose with music features into a windowed training dataset."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from mmx.commands._common import console, open_input, write_jsonl
from mmx.errors import DataError


def pair(
    inventory: str = typer.Argument(..., metavar="INVENTORY", help="Inventory from `mmx discover` (JSON Lines); '-' reads stdin."),
    out: Path = typer.Option(..., "-o", "--out", help="Dataset directory to write (replaced whole if it holds an mmx dataset)."),
    window: float = typer.Option(5.0, "--window", help="Window length in seconds."),
    stride: float = typer.Option(0.5, "--stride", help="Seconds between window starts."),
    max_gap: float = typer.Option(0.5, "--max-gap", help="Frames farther than this many seconds from a real pose sample are unobserved."),
    min_observed: float = typer.Option(0.5, "--min-observed", help="Drop windows whose observed share of frames is below this (0..1)."),
    clock_offset: float = typer.Option(0.0, "--clock-offset", help="Seconds added to every track time computed from pose timestamps."),
    split: str = typer.Option("0.8/0.1/0.1", "--split", help="Train/val/test fractions of sessions (or tracks)."),
    split_by: str = typer.Option("session", "--split-by", help="Keep every window of a 'session' or of a 'track' on one side, or cut each session into contiguous 'time' blocks."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split shuffle."),
    cues: Path | None = typer.Option(None, "--cues", help="Cue file pairing standalone pose files with tracks: JSON Lines {pose, track, offset_s}."),
    jobs: int = typer.Option(1, "-j", "--jobs", min=1, help="Sessions paired in parallel on this machine, one worker process each."),
    cluster: str | None = typer.Option(None, "--cluster", metavar="tcp://HOST:8786",
                                       help="Pair on this Dask scheduler's workers (extra mmx[cluster]); they must see -o's directory at the same path."),
    audio_features: str = typer.Option("onset_env,mfcc,chroma", "--audio-features",
                                       help="Feature-artifact arrays concatenated into the audio columns, in order (onset_env, mfcc, chroma, mel)."),
    preview: Path | None = typer.Option(None, "--preview", help="Also plot the first window to this PNG (onset envelope and beats over kinetic energy)."),
) -> None:  # fmt: skip
    """Pair recorded pose with music features into a windowed training dataset.

    Reads the inventory that `mmx discover` wrote (feature artifacts, session capture
    directories, standalone pose files) and pairs every session x camera x music cue (a
    segment). A pose sample taken at wall time w sits at track time
    w - started_at + offset_s + clock_offset (started_at and offset_s from the session's
    music.cue event); a cue lasts until the next cue or the end of the session. Pose is
    linearly interpolated (every joint coordinate and confidence) onto the audio frame times
    k * hop_length / sr (22050/512, about 43.07 frames per second); frames farther than
    --max-gap seconds from a real pose sample (joints not null) are unobserved. Windows of
    --window seconds start every --stride seconds inside each cue; windows with less than
    --min-observed observed frames are dropped and counted. Sessions (or, with --split-by
    track, tracks) are shuffled with --seed into train/val/test, never single windows; when
    there are fewer sessions than splits asked for, a warning says which splits stay empty
    (also in the manifest), and --split-by time instead cuts each session's cued time into
    three contiguous blocks by the fractions, dropping the windows that straddle a boundary.
    Standalone pose files (the vtest.pose.jsonl format) are paired through --cues: one
    JSON object per line, {"pose": PATH, "track": AUDIO_SHA256, "offset_s": S}, where
    offset_s is the track position at the pose file's t = 0.

    The same inputs and parameters give byte-identical output, however the work is spread.
    Each session is one task: --jobs N runs N at a time on this machine; --cluster
    tcp://HOST:8786 sends them to a Dask distributed scheduler (pip install 'mmx[cluster]'
    on every worker), whose workers write the segment files straight into the output's
    temporary sibling directory: it must be on a file system every worker sees at the same
    path. A worker lost mid-run has its tasks redone elsewhere. Memory does not grow with
    the number of sessions.

    Dataset format (Apache Parquet, readable with pyarrow, polars or DuckDB).
    DIR/segments/NAME.parquet: one file per session x camera x cue, one row per audio frame
    of the cue's span, stored once: frame (track frame index), time_s, audio (list of F
    float32: the manifest's columns, default onset_env, mfcc[0..19], chroma[C..B], F = 33),
    pose (19 x [x, y, confidence] float32, Apple Vision order, zeros where unobserved), speed
    and accel (19 float32, image units/s and /s^2), kinetic_energy (float32), observed
    (bool: a real pose sample within --max-gap seconds), beat (float32, 1.0 on the feature
    artifact's beat frames). DIR/windows.parquet: one row per window: id, split, session,
    camera, track (audio sha256), title, segment (file name without .parquet), row (first
    row in the segment), frames (T = round(window * sr / hop_length), 215 for 5 s),
    start_frame, track_start_s, track_end_s, observed_share, torso_length. Window w is rows
    [w.row, w.row + w.frames) of its segment. DIR/splits/train.txt, val.txt, test.txt: the
    session ids (track hashes with --split-by track) of each split. DIR/manifest.json:
    parameters and params_hash, every input's path and sha256, library versions, windows per
    split, dropped windows by reason, skipped cues, split warnings, statistics (observed
    share, kinetic energy, Beat Alignment Score per split), the alignment assumptions in
    plain words, and manifest_hash.

    In Python, mmx.dataset.open(DIR, "train")[i] gives window i as numpy arrays (memory-mapped,
    one row group decoded at a time):

    \b
        audio     (T, F) float32
        pose      (T, 19, 3) float32
        dynamics  (T, 39) float32: speeds (torso lengths/s), accelerations (torso lengths/s^2), kinetic energy
        observed  (T,) bool
        beat      (T,) float32

    Torso length: shoulder midpoint to hip midpoint, median over the window's observed
    frames; kinetic energy = 0.5 * mean over joints of speed^2. mmx.dataset.torch (extra
    mmx[torch]) has PyTorch datasets, a collate function and augmentations. Beat Alignment
    Score (Bailando/EDGE): motion beats are local minima of the smoothed mean joint speed;
    the score is the mean over music beats of exp(-d^2 / (2 sigma^2)), d the distance to the
    nearest motion beat, sigma = 0.05 s (3 frames at 60 fps); the manifest also gives FACT's
    direction (mean over motion beats).

    Progress, warnings and a summary go to stderr; one JSON summary line goes to stdout:
    dir, windows per split, dropped, problems, manifest_hash, params_hash,
    beat_alignment_score, warnings.

    Exit status:

    65 when an inventory line, an events or pose line, a cue or a feature artifact was bad
    (each reported as a warning with its line number); the rest was processed and the
    dataset written. 69 when the --cluster scheduler cannot be reached or mmx[cluster] is
    not installed.

    Examples:

    \b
        mmx features music/ -o features/
        mmx discover sessions/ features/ > inventory.jsonl
        mmx pair inventory.jsonl -o dataset/ --preview window.png
        mmx discover sessions/ features/ | mmx pair - -o dataset/ --split-by track --seed 1
        mmx pair inventory.jsonl -o dataset/ --cues cues.jsonl
        mmx pair inventory.jsonl -o dataset/ --split-by time --split 0.8/0.1/0.1
        mmx pair inventory.jsonl -o /shared/dataset/ --cluster tcp://10.0.0.5:8786

    See also:

    mmx-features(1), mmx-discover(1)
    """
    from mmx.dataset.pair import PairParams, pair_dataset, parse_split

    try:
        fractions = parse_split(split)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--split") from None
    params = PairParams(window_s=window, stride_s=stride, max_gap_s=max_gap, min_observed=min_observed,
                        clock_offset_s=clock_offset, split=fractions, split_by=split_by, seed=seed,
                        audio_features=tuple(k.strip() for k in audio_features.split(",") if k.strip()))  # fmt: skip
    try:
        params.check()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    warnings = 0

    def on_problem(exc: DataError) -> None:
        nonlocal warnings
        warnings += 1
        console.print(f"[yellow]warning:[/] {escape(exc.message)}", markup=True, soft_wrap=True, highlight=False)

    def on_warning(text: str) -> None:
        console.print(f"[yellow]warning:[/] {escape(text)}", markup=True, soft_wrap=True, highlight=False)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with open_input(inventory) as fp, Progress(
        TextColumn("pairing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal,
    ) as progress:  # fmt: skip
        task = progress.add_task("", total=None)

        def on_progress(done: int, total: int, label: str) -> None:
            progress.update(task, completed=done, total=total, description=label)

        summary = pair_dataset(fp, out, params=params, inventory_name=inventory, cue_file=cues,
                               on_problem=on_problem, on_progress=on_progress, on_warning=on_warning,
                               jobs=jobs, cluster=cluster)  # fmt: skip
    w = summary["windows"]
    bas = summary["beat_alignment_score"]
    console.print(
        f"wrote {out}: {sum(w.values())} windows (train {w['train']}, val {w['val']}, test {w['test']}), "
        f"dropped {sum(summary['dropped'].values())}"
        + (f", beat alignment score {bas:.3f}" if bas is not None else ""),
        soft_wrap=True, highlight=False,
    )  # fmt: skip
    if preview is not None:
        if sum(w.values()):
            from mmx.dataset.preview import plot_window

            row = plot_window(out, preview)
            summary["preview"] = str(preview)
            console.print(f"preview of {row['id']} in {preview}", soft_wrap=True, highlight=False)
        else:
            on_problem(DataError("no windows to preview"))
    write_jsonl(summary)
    if summary["problems"] or warnings:
        count = max(summary["problems"], warnings)
        raise DataError(f"{count} input problem(s), reported above; the rest was paired into {out}")
