"""`mmx features`: one `.npz` of librosa audio features per audio file."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mmx.commands._common import console, write_jsonl
from mmx.errors import EX_DATAERR, DataError, MmxError


def _read_path_list() -> list[str]:
    return [line.strip() for line in sys.stdin if line.strip()]


def features(
    inputs: list[str] = typer.Argument(..., metavar="AUDIO|DIR...", help="Audio files or directories (searched recursively for .wav .flac .ogg .oga .mp3 .aif .aiff); '-' reads paths from stdin, one per line."),
    out: Path = typer.Option(..., "-o", "--out", help="Directory for the .npz artifacts (created when absent)."),
    jobs: int = typer.Option(1, "-j", "--jobs", min=1, help="Files analysed in parallel, one worker process each."),
    force: bool = typer.Option(False, "--force", help="Recompute even when an artifact with the same content hash and parameters exists."),
    baseline_fps: float = typer.Option(30.0, "--baseline-fps", min=2.0, max=200.0, help="Frame rate of the 35-dim EDGE/FACT baseline block (its sample rate is fps * 512 Hz)."),
    no_baseline: bool = typer.Option(False, "--no-baseline", help="Skip the EDGE/FACT baseline block (stored empty, shape (0, 35)); about a third faster."),
    cluster: str | None = typer.Option(None, "--cluster", metavar="tcp://HOST:8786",
                                       help="Analyse on this Dask scheduler's workers (extra mmx[cluster]); they must see the audio files and -o's directory at the same paths."),
) -> None:  # fmt: skip
    """Compute music features (mel, onset envelope, beats, chroma, MFCC) into one .npz per audio file.

    Every audio file is decoded with soundfile (WAV, FLAC, Ogg Vorbis, MP3), mixed to mono,
    resampled to 22050 Hz (soxr) and analysed with librosa: hop length 512 samples, so audio
    frame k sits at t = k * 512 / 22050 s (about 43.07 frames per second). The artifact
    OUT/<stem>-<sha256[:12]>.npz is written atomically (temporary file, then rename). A file
    whose content hash and parameters match an existing artifact in OUT is skipped unless
    --force. Files run in parallel with --jobs, longest first.

    With --cluster tcp://HOST:8786 every file is a task on a Dask distributed scheduler (pip
    install 'mmx[cluster]' here and on every worker, started with `dask worker ADDRESS`):
    the worker that analyses a file writes its artifact into OUT itself, so OUT and the audio
    files must be on a file system every worker sees at the same paths. The artifacts are
    byte-identical to a local run; the progress bar advances as the cluster reports each
    task done; a worker lost mid-run has its files analysed again by the others.

    stdout: one JSON line per analysed or skipped file, in the order they finish:
    {"path", "npz", "sha256", "duration_s", "tempo_bpm", "beats", "skipped"}.
    stderr: a progress bar, one "error: <file>: <reason>" line per file that could not be
    decoded (truncated, corrupt, not audio) and a summary; the other files go on.

    Artifact format (numpy .npz, time-major arrays, read with numpy.load or
    mmx.audio.read_features):

    \b
        sr                 ()               int64    22050 (Hz)
        hop_length         ()               int64    512 (samples)
        n_fft              ()               int64    2048 (samples)
        mel                (n_frames, 128)  float32  log-power mel, dB (power_to_db ref=max)
        onset_env          (n_frames,)      float32  onset envelope (onset_strength)
        tempo_bpm          ()               float64  60 / mean steady inter-beat interval
        tempo_librosa_bpm  ()               float64  librosa beat_track's own tempo
        beat_frames        (n_beats,)       int64    beats as audio frame indices
        beat_times         (n_beats,)       float64  beats, seconds from the track start
        chroma             (n_frames, 12)   float32  chroma_stft, C to B
        mfcc               (n_frames, 20)   float32  20 MFCC
        baseline           (n_base, 35)     float32  EDGE/FACT baseline block (below)
        baseline_fps       ()               float64  frame rate of baseline (default 30)
        baseline_sr        ()               int64    its sample rate, fps * 512 Hz
        sha256             ()               str      sha256 of the source file's bytes
        duration_s         ()               float64  source duration, seconds
        source_path        ()               str      absolute path of the source file
        versions           ()               str      JSON: mmx, librosa, numpy, soundfile
        params             ()               str      JSON: every analysis parameter
        params_hash        ()               str      sha256 of the canonical params JSON

    tempo_bpm is 60 divided by the mean inter-beat interval of beat_times, leaving out
    intervals more than 25 % from the median (dropped or doubled beats); librosa's own
    estimate picks whole-frame autocorrelation lags (117.5 or 123.0 BPM for a 120 BPM track at
    this hop length) and is kept as tempo_librosa_bpm. mel, onset_env, chroma, mfcc and
    beat_frames equal what librosa computes from the waveform with the same parameters.

    The baseline block's 35 columns: onset envelope (1), MFCC (20), chroma_cens (12),
    onset-peak one-hot (1), beat one-hot (1). It follows EDGE's baseline_features.py: the
    audio is resampled to baseline_fps * 512 Hz (15360 Hz for 30 fps) so one hop of 512
    samples is one frame; its beat tracker uses tightness 100 and starts from
    tempo_librosa_bpm. Frame k of baseline sits at k / baseline_fps seconds.

    Exit status:
    65 when one or more files could not be decoded or analysed (each named on stderr); every
    other file was processed and written. 69 when the --cluster scheduler cannot be reached
    or mmx[cluster] is not installed.

    Files:
    OUT/<stem>-<sha256[:12]>.npz, one per audio file.

    Examples:

    \b
        mmx features music/ -o features/
        mmx features music/ -o features/ --jobs 2
        find music -name '*.flac' | mmx features - -o features/ --force
        mmx features track.ogg -o features/ | jq -r .npz
        mmx features /shared/music/ -o /shared/features/ --cluster tcp://10.0.0.5:8786

    See also:
    mmx-discover(1), mmx-pair(1)
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mmx.audio.batch import FeatureRun, collect_audio
    from mmx.audio.features import FeatureParams

    paths_in: list[str] = []
    for item in inputs:
        paths_in.extend(_read_path_list() if item == "-" else [item])
    paths = collect_audio(paths_in)
    if not paths:
        raise DataError("no audio files found in " + ", ".join(inputs),
                        hint="give audio files or directories holding .wav/.flac/.ogg/.mp3 files")  # fmt: skip
    params = FeatureParams(baseline_fps=baseline_fps, baseline=not no_baseline)

    failed: list[MmxError | str] = []
    codes: list[int] = []
    done = skipped = 0
    seconds = 0.0
    with FeatureRun(paths, out_dir=out, params=params, jobs=jobs, force=force, cluster=cluster) as run:
        progress = Progress(
            TextColumn("features"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[name]}"), console=console, transient=True,
        )  # fmt: skip
        with progress:
            task = progress.add_task("features", total=len(paths), name="")
            for result in run:
                if result.error is not None:
                    failed.append(result.error)
                    codes.append(result.exit_code)
                    progress.console.print(f"[bold red]error:[/] {result.error}", markup=True, soft_wrap=True, highlight=False)
                else:
                    write_jsonl(result.to_record())
                    skipped += result.skipped
                    done += not result.skipped
                    seconds += result.duration_s or 0.0
                progress.update(task, advance=1, name=Path(result.path).name)
    console.print(
        f"{done} analysed, {skipped} skipped (already done), {len(failed)} failed; "
        f"{seconds / 60:.1f} min of audio in {out}", highlight=False, soft_wrap=True,
    )  # fmt: skip
    if failed:
        code = EX_DATAERR if EX_DATAERR in codes or not codes else codes[0]
        err = DataError(f"{len(failed)} of {len(paths)} audio files could not be analysed")
        err.exit_code = code
        raise err
