"""Audio feature extraction for `mmx features`: librosa arrays of one audio file.

Decoding is soundfile's (WAV, FLAC, Ogg Vorbis, MP3 — whatever libsndfile reads), channels
are averaged to mono and resampled with soxr (librosa's ``soxr_hq``), exactly what
``librosa.load(path, sr=...)`` does. One power STFT at 22050 Hz (n_fft 2048, hop 512,
centred) feeds the mel spectrogram, onset envelope, chroma and MFCC — the same arrays the
librosa functions compute from the waveform, without computing the STFT four times.

The baseline block follows EDGE (Stanford-TML/EDGE ``data/audio_extraction/baseline_features.py``)
and FACT/AIST++: the audio is resampled to ``baseline_fps * 512`` Hz (15360 Hz for 30 fps)
so a hop of 512 samples is one frame at ``baseline_fps``; then onset envelope, 20 MFCC,
12 chroma_cens, onset-peak one-hot and beat one-hot (``beat_track`` with ``tightness=100``
and ``start_bpm`` the track's tempo at 22050 Hz), concatenated to ``(n_base, 35)``.
With ``FeatureParams(baseline=False)`` (``mmx features --no-baseline``) the block is skipped:
no second resample, no second beat tracker, and ``baseline`` is stored as ``(0, 35)``.
"""

from __future__ import annotations

import hashlib
import json
import struct
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmx import __version__
from mmx.audio.artifact import BASELINE_DIM, sha256_file
from mmx.errors import DataError, InputMissingError, IOFailure

#: Format version of the artifact; part of the parameters so a format change redoes files.
ARTIFACT_VERSION = 1
#: File name endings `mmx features` treats as audio when given a directory.
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff"})


@dataclass(frozen=True)
class FeatureParams:
    """Every parameter of the analysis; written into the artifact as ``params`` JSON.

    ``sr`` Hz, ``hop_length`` and ``n_fft`` samples, ``baseline_fps`` frames per second of the
    EDGE/FACT baseline block (its sample rate is ``round(baseline_fps * baseline_hop_length)``);
    ``baseline`` False skips that block (about a third of the analysis time).
    """

    sr: int = 22050
    hop_length: int = 512
    n_fft: int = 2048
    n_mels: int = 128
    n_mfcc: int = 20
    n_chroma: int = 12
    beat_tightness: float = 100.0
    tempo_method: str = "mean_steady_inter_beat_interval"
    baseline_fps: float = 30.0
    baseline_hop_length: int = 512
    resample: str = "soxr_hq"
    mono: str = "mean"
    artifact_version: int = ARTIFACT_VERSION
    baseline: bool = True

    def __post_init__(self) -> None:
        if not (self.baseline_fps > 0 and np.isfinite(self.baseline_fps)):
            raise DataError(f"baseline fps must be a positive number, not {self.baseline_fps}")
        if self.baseline_sr < 1000:
            raise DataError(f"baseline fps {self.baseline_fps} gives a sample rate below 1000 Hz")

    @property
    def baseline_sr(self) -> int:
        """Sample rate of the baseline analysis in Hz (EDGE: SR = FPS * HOP_LENGTH)."""
        return int(round(self.baseline_fps * self.baseline_hop_length))

    def to_json(self) -> str:
        """Canonical JSON of the parameters; ``baseline`` appears only when it is off, so
        artifacts written before the option existed keep their ``params_hash``."""
        fields = asdict(self)
        if fields["baseline"]:
            del fields["baseline"]
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))

    @property
    def params_hash(self) -> str:
        """sha256 (hex) of the canonical parameter JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the arrays (written into every artifact)."""
    out = {"mmx": __version__}
    for name in ("librosa", "numpy", "soundfile", "soxr", "scipy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


# --- decoding -------------------------------------------------------------------------------


def _ogg_is_complete(path: Path) -> bool:
    """True when the file's last Ogg page is whole and carries the end-of-stream flag.

    A truncated Ogg Vorbis file decodes without any error in libsndfile (it just ends
    early), so truncation is detected from the container (RFC 3533 page header).
    """
    size = path.stat().st_size
    with open(path, "rb") as fp:
        fp.seek(max(0, size - 70_000))  # an Ogg page is at most 65307 bytes
        tail = fp.read()
    start = tail.rfind(b"OggS")
    if start < 0 or len(tail) - start < 27:
        return False
    header_type = tail[start + 5]
    n_segments = tail[start + 26]
    seg_table = tail[start + 27 : start + 27 + n_segments]
    if len(seg_table) < n_segments:
        return False
    page_end = start + 27 + n_segments + sum(seg_table)
    return bool(header_type & 0x04) and page_end == len(tail)


def _wav_declared_data_bytes(path: Path) -> tuple[int, int] | None:
    """(declared size of the RIFF ``data`` chunk, bytes actually present), or None."""
    size = path.stat().st_size
    with open(path, "rb") as fp:
        head = fp.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            fp.seek(pos)
            chunk = fp.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                return csize, size - pos - 8
            pos += 8 + csize + (csize & 1)
    return None


def load_audio(path: str | Path, *, sr: int | None = None) -> tuple[np.ndarray, int, int, float]:
    """Decode an audio file to mono float32: ``(y (n_samples,), sr, channels, duration_s)``.

    ``sr`` resamples with soxr (``soxr_hq``); None keeps the file's rate. Raises
    InputMissingError when absent, DataError naming the file when it cannot be decoded,
    is empty or is truncated (an Ogg stream without its end page, a WAV shorter than its
    header says, an MP3 that decodes to fewer frames than announced).
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise InputMissingError(f"no such file: {path}")
    try:
        with sf.SoundFile(str(path)) as snd:
            announced = snd.frames
            native_sr = snd.samplerate
            channels = snd.channels
            fmt = snd.format
            data = snd.read(dtype="float32", always_2d=True)
    except sf.SoundFileError as exc:
        reason = str(exc).replace(f"Error opening {str(path)!r}: ", "").strip()
        raise DataError(f"{path}: cannot decode audio: {reason}") from None
    except OSError as exc:
        raise IOFailure(f"cannot read {path}: {exc.strerror or exc}") from None
    if fmt == "OGG" and not _ogg_is_complete(path):
        raise DataError(f"{path}: truncated Ogg stream (the last page is cut off or has no end-of-stream flag)",
                        hint="the file is incomplete; copy or download it again")  # fmt: skip
    if fmt in ("WAV", "WAVEX"):
        declared = _wav_declared_data_bytes(path)
        if declared is not None and declared[0] not in (0, 0xFFFFFFFF) and declared[1] < declared[0]:
            raise DataError(f"{path}: truncated WAV file: the header announces {declared[0]} data bytes, "
                            f"{declared[1]} are present", hint="the file is incomplete; copy it again")  # fmt: skip
    if announced > 0 and data.shape[0] < announced * 0.99:
        raise DataError(f"{path}: truncated audio: decoded {data.shape[0]} of {announced} announced frames",
                        hint="the file is incomplete; copy it again")  # fmt: skip
    if data.shape[0] == 0:
        raise DataError(f"{path}: no audio samples")
    duration_s = data.shape[0] / float(native_sr)
    y = data[:, 0] if channels == 1 else data.mean(axis=1, dtype=np.float32)
    y = np.ascontiguousarray(y)
    if sr is not None and sr != native_sr:
        y = resample(y, native_sr, sr)
        native_sr = sr
    return y, native_sr, channels, duration_s


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono float32 signal with soxr ``HQ`` (librosa's default ``soxr_hq``)."""
    import librosa

    return librosa.resample(y, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")


# --- analysis -------------------------------------------------------------------------------


def _tempo_scalar(tempo: Any) -> float:
    return float(np.atleast_1d(tempo)[0])


def tempo_from_beats(beat_times: np.ndarray, fallback_bpm: float) -> float:
    """Tempo in BPM as 60 / the mean inter-beat interval of a beat grid (seconds).

    librosa's tempo estimate picks an autocorrelation lag in whole frames, so at hop 512 /
    22050 Hz it can only say 117.5 or 123.0 BPM for a 120 BPM track; the beat grid's mean
    interval is not quantized that way. Intervals farther than 25 % from the median (a
    dropped or doubled beat) are left out. With fewer than 3 beats ``fallback_bpm`` is
    returned.
    """
    if beat_times.shape[0] < 3:
        return float(fallback_bpm)
    ibi = np.diff(beat_times)
    median = float(np.median(ibi))
    steady = ibi[np.abs(ibi - median) <= 0.25 * median]
    if median <= 0 or steady.shape[0] == 0:
        return float(fallback_bpm)
    return float(60.0 / steady.mean())


#: Frames per piece when estimating tuning; piptrack's temporaries are several copies of
#: the spectrogram, so doing it in pieces keeps peak memory near the spectrogram's own size.
TUNING_CHUNK_FRAMES = 2048


def estimate_tuning(S: np.ndarray, sr: int, *, bins_per_octave: int, chunk_frames: int = TUNING_CHUNK_FRAMES) -> float:
    """``librosa.estimate_tuning(S=S, sr=sr, bins_per_octave=…)`` computed a piece of frames at a time.

    ``S`` is a magnitude or power spectrogram ``(1 + n_fft // 2, n_frames)``. piptrack works
    on each frame alone (gradient, parabolic interpolation, per-frame reference and local
    maxima all run along the frequency axis), and the median and histogram that follow do
    not depend on order, so the result is identical to librosa's while the temporaries are
    ``chunk_frames`` wide instead of the whole track.
    """
    import librosa

    n_fft = 2 * (S.shape[0] - 1)
    pitches: list[np.ndarray] = []
    mags: list[np.ndarray] = []
    for start in range(0, S.shape[1], chunk_frames):
        pitch, mag = librosa.piptrack(S=S[:, start : start + chunk_frames], sr=sr, n_fft=n_fft)
        found = pitch > 0
        pitches.append(pitch[found])
        mags.append(mag[found])
    pitch = np.concatenate(pitches) if pitches else np.zeros(0, np.float32)
    mag = np.concatenate(mags) if mags else np.zeros(0, np.float32)
    threshold = np.median(mag) if mag.size else 0.0
    return float(librosa.pitch_tuning(pitch[mag >= threshold], resolution=0.01, bins_per_octave=bins_per_octave))


def compute_main(y: np.ndarray, params: FeatureParams) -> dict[str, np.ndarray]:
    """The 22050 Hz arrays from a mono signal already at ``params.sr``.

    Returns time-major arrays: ``mel`` (n_frames, n_mels) dB ref max, ``onset_env``
    (n_frames,), ``chroma`` (n_frames, 12), ``mfcc`` (n_frames, 20), ``tempo_bpm`` (),
    ``beat_frames`` (n_beats,) int64 and ``beat_times`` (n_beats,) float64 seconds, and
    ``tempo_librosa_bpm`` () librosa's own (frame-quantized) tempo estimate.
    Equal to ``librosa.feature.melspectrogram(y=…)``, ``onset.onset_strength(y=…)``,
    ``feature.chroma_stft(y=…)``, ``feature.mfcc(y=…)`` and
    ``beat.beat_track(onset_envelope=…)`` with the same parameters.
    """
    import librosa

    sr, hop, n_fft = params.sr, params.hop_length, params.n_fft
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop))
    power **= 2  # in place: the same values as np.abs(stft) ** 2, one spectrogram less in memory
    mel_power = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=params.n_mels)
    # onset_strength and mfcc both work on power_to_db(mel) with ref=1.0 (their own default)
    log_mel = librosa.power_to_db(mel_power)
    onset_env = librosa.onset.onset_strength(S=log_mel, sr=sr, hop_length=hop)
    mfcc = librosa.feature.mfcc(S=log_mel, sr=sr, n_mfcc=params.n_mfcc)
    tuning = estimate_tuning(power, sr, bins_per_octave=params.n_chroma)
    chroma = librosa.feature.chroma_stft(S=power, sr=sr, n_chroma=params.n_chroma, tuning=tuning)
    del power
    tempo, beat_frames = librosa.beat.beat_track(
        onset_envelope=onset_env, sr=sr, hop_length=hop, tightness=params.beat_tightness
    )
    beat_frames = np.asarray(beat_frames, dtype=np.int64)
    beat_times = librosa.frames_to_time(beat_frames, sr=sr, hop_length=hop).astype(np.float64)
    librosa_bpm = _tempo_scalar(tempo)
    return {
        "mel": librosa.power_to_db(mel_power, ref=np.max).T.astype(np.float32),
        "onset_env": onset_env.astype(np.float32),
        "tempo_bpm": np.float64(tempo_from_beats(beat_times, librosa_bpm)),
        "tempo_librosa_bpm": np.float64(librosa_bpm),
        "beat_frames": beat_frames,
        "beat_times": beat_times,
        "chroma": np.ascontiguousarray(chroma.T, dtype=np.float32),
        "mfcc": np.ascontiguousarray(mfcc.T, dtype=np.float32),
    }


def compute_baseline(y_base: np.ndarray, params: FeatureParams, *, start_bpm: float) -> np.ndarray:
    """The EDGE/FACT 35-dim baseline ``(n_base, 35)`` float32 from audio at ``params.baseline_sr``.

    Columns: onset envelope (1), MFCC (20), chroma_cens (12), onset-peak one-hot (1),
    beat one-hot (1); frame ``k`` at ``k / baseline_fps`` seconds. ``start_bpm`` seeds the
    beat tracker as EDGE does with the tempo at 22050 Hz.
    """
    import librosa

    sr, hop = params.baseline_sr, params.baseline_hop_length
    # EDGE calls onset_strength(y) and mfcc(y) with librosa's default n_fft 2048 / hop 512;
    # both use the same log-mel spectrogram, computed once here from one STFT magnitude,
    # which also gives chroma_cens's tuning estimate (estimate_tuning(y=…) is piptrack of it).
    magnitude = np.abs(librosa.stft(y_base, n_fft=2048, hop_length=hop))
    mel_power = librosa.feature.melspectrogram(S=magnitude**2.0, sr=sr)
    log_mel = librosa.power_to_db(mel_power)
    # chroma_cens analyses a CQT with 36 bins per octave and estimates its tuning at that resolution
    cens_tuning = estimate_tuning(magnitude, sr, bins_per_octave=36)
    del magnitude
    envelope = librosa.onset.onset_strength(S=log_mel, sr=sr, hop_length=hop)
    mfcc = librosa.feature.mfcc(S=log_mel, sr=sr, n_mfcc=params.n_mfcc)
    with warnings.catch_warnings():
        # the CQT's lowest octaves of a short clip are shorter than their FFT; librosa pads them
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large for input signal", category=UserWarning)
        chroma = librosa.feature.chroma_cens(y=y_base, sr=sr, hop_length=hop, n_chroma=params.n_chroma,
                                             tuning=cens_tuning)  # fmt: skip
    n = min(envelope.shape[0], mfcc.shape[1], chroma.shape[1])
    envelope, mfcc, chroma = envelope[:n], mfcc[:, :n], chroma[:, :n]
    peaks = librosa.onset.onset_detect(onset_envelope=envelope, sr=sr, hop_length=hop)
    peak_onehot = np.zeros(n, dtype=np.float32)
    peak_onehot[peaks[peaks < n]] = 1.0
    _, beats = librosa.beat.beat_track(
        onset_envelope=envelope, sr=sr, hop_length=hop, start_bpm=start_bpm, tightness=params.beat_tightness
    )
    beat_onehot = np.zeros(n, dtype=np.float32)
    beats = np.asarray(beats, dtype=np.int64)
    beat_onehot[beats[beats < n]] = 1.0
    block = np.concatenate(
        [envelope[:, None], mfcc.T, chroma.T, peak_onehot[:, None], beat_onehot[:, None]], axis=1
    )
    return np.ascontiguousarray(block, dtype=np.float32)


def extract_features(path: str | Path, params: FeatureParams | None = None, *, sha256: str | None = None) -> dict[str, Any]:
    """Every array and field of the artifact (see `mmx.audio.artifact`) for one audio file.

    ``sha256`` saves re-hashing when the caller already has it. Raises InputMissingError,
    IOFailure, or DataError naming the file when it cannot be decoded or analysed.
    """
    import librosa

    params = params or FeatureParams()
    path = Path(path).absolute()
    digest = sha256 or sha256_file(path)
    y_native, native_sr, _, duration_s = load_audio(path)
    y = resample(y_native, native_sr, params.sr) if native_sr != params.sr else y_native
    y_base = None
    if params.baseline:
        y_base = resample(y_native, native_sr, params.baseline_sr) if native_sr != params.baseline_sr else y_native
    del y_native
    try:
        main = compute_main(y, params)
        del y
        # EDGE seeds its baseline beat tracker with librosa's tempo estimate at 22050 Hz
        if y_base is None:
            baseline = np.zeros((0, BASELINE_DIM), dtype=np.float32)
        else:
            baseline = compute_baseline(y_base, params, start_bpm=float(main["tempo_librosa_bpm"]) or 120.0)
    except librosa.util.exceptions.ParameterError as exc:
        raise DataError(f"{path}: cannot analyse audio: {exc}") from None
    return {
        "sr": np.int64(params.sr),
        "hop_length": np.int64(params.hop_length),
        "n_fft": np.int64(params.n_fft),
        **main,
        "baseline": baseline,
        "baseline_fps": np.float64(params.baseline_fps),
        "baseline_sr": np.int64(params.baseline_sr),
        "sha256": np.str_(digest),
        "duration_s": np.float64(duration_s),
        "source_path": np.str_(str(path)),
        "versions": np.str_(json.dumps(library_versions(), sort_keys=True)),
        "params": np.str_(params.to_json()),
        "params_hash": np.str_(params.params_hash),
    }
