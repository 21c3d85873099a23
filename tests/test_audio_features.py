"""mmx.audio: feature extraction, the .npz artifact, skip/force, worker pool, broken audio, real tracks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mmx.audio import REQUIRED_KEYS, artifact_name, find_features, load_beat_grid, read_features, read_header, write_features
from mmx.audio.batch import FeatureRun, collect_audio
from mmx.audio.features import FeatureParams, extract_features, load_audio, tempo_from_beats
from mmx.errors import DataError, InputMissingError


from .audio_fixtures import click_signal, sha256, write_click, write_truncated_ogg

FRAME_S = 512 / 22050  # one audio frame at sr 22050, hop 512


@pytest.fixture(scope="module")
def click_features(tmp_path_factory) -> dict:
    path = write_click(tmp_path_factory.mktemp("click") / "click120.wav", bpm=120.0, seconds=12.0, first_s=0.25)
    return extract_features(path)


def test_click_track_at_120_bpm_gives_tempo_120_and_beats_every_half_second(click_features):
    d = click_features
    assert d["tempo_bpm"] == pytest.approx(120.0, abs=1.0)
    beats = d["beat_times"]
    assert len(beats) >= 20  # 23 clicks in 12 s; the tracker may trim one at either end
    assert np.all(np.abs(np.diff(beats) - 0.5) <= FRAME_S + 1e-9)
    # every beat sits on a click (clicks at 0.25 + k * 0.5 s); onset peaks trail a click by < 2 frames
    phase = beats - 0.25 - np.round((beats - 0.25) / 0.5) * 0.5
    assert np.all((phase >= -FRAME_S) & (phase <= 2 * FRAME_S))
    np.testing.assert_allclose(d["beat_times"], d["beat_frames"] * 512 / 22050)


def test_artifact_keys_shapes_and_frame_times(click_features):
    d = click_features
    assert set(REQUIRED_KEYS) <= set(d)
    n_frames = 1 + int(12.0 * 22050) // 512
    assert d["mel"].shape == (n_frames, 128) and d["mel"].dtype == np.float32
    assert d["onset_env"].shape == (n_frames,) and d["onset_env"].dtype == np.float32
    assert d["chroma"].shape == (n_frames, 12) and d["mfcc"].shape == (n_frames, 20)
    assert d["beat_frames"].dtype == np.int64 and d["beat_times"].dtype == np.float64
    assert d["mel"].max() == pytest.approx(0.0)  # dB relative to the maximum
    assert int(d["sr"]) == 22050 and int(d["hop_length"]) == 512 and int(d["n_fft"]) == 2048
    assert float(d["duration_s"]) == pytest.approx(12.0)
    # baseline: 35 columns at 30 fps over the whole track, its beat one-hot on the clicks
    base = d["baseline"]
    assert base.shape[1] == 35 and base.dtype == np.float32
    assert int(d["baseline_sr"]) == 15360 and float(d["baseline_fps"]) == 30.0
    assert base.shape[0] == 1 + (12 * 15360) // 512
    assert set(np.unique(base[:, 33])) <= {0.0, 1.0} and set(np.unique(base[:, 34])) <= {0.0, 1.0}
    beat_s = np.nonzero(base[:, 34])[0] / 30.0
    assert len(beat_s) >= 20
    assert np.all(np.abs(np.diff(beat_s) - 0.5) <= 1 / 30 + 1e-9)
    # onset-peak column marks the clicks too
    peaks = np.nonzero(base[:, 33])[0] / 30.0
    assert len(peaks) >= 20
    versions = json.loads(str(d["versions"]))
    assert {"mmx", "librosa", "numpy", "soundfile"} <= set(versions)
    params = json.loads(str(d["params"]))
    assert params["baseline_fps"] == 30.0 and params["hop_length"] == 512
    assert str(d["params_hash"]) == FeatureParams().params_hash


def test_arrays_equal_plain_librosa_and_edge_from_the_waveform(tmp_path):
    import librosa

    path = write_click(tmp_path / "c.flac", bpm=100.0, seconds=5.0, stereo=True)
    d = extract_features(path)
    y, sr = librosa.load(path, sr=22050)
    np.testing.assert_array_equal(d["mel"], librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr), ref=np.max).T)
    onset = librosa.onset.onset_strength(y=y, sr=sr)
    np.testing.assert_array_equal(d["onset_env"], onset)
    np.testing.assert_array_equal(d["chroma"], librosa.feature.chroma_stft(y=y, sr=sr).T)
    np.testing.assert_array_equal(d["mfcc"], librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20).T)
    tempo, beats = librosa.beat.beat_track(onset_envelope=onset, sr=sr)
    np.testing.assert_array_equal(d["beat_frames"], beats)
    assert float(d["tempo_librosa_bpm"]) == pytest.approx(float(np.atleast_1d(tempo)[0]))
    # the baseline block exactly as EDGE's baseline_features.py computes it
    SR = 30 * 512
    data, _ = librosa.load(path, sr=SR)
    envelope = librosa.onset.onset_strength(y=data, sr=SR)
    mfcc = librosa.feature.mfcc(y=data, sr=SR, n_mfcc=20).T
    chroma = librosa.feature.chroma_cens(y=data, sr=SR, hop_length=512, n_chroma=12).T
    peak_onehot = np.zeros_like(envelope)
    peak_onehot[librosa.onset.onset_detect(onset_envelope=envelope, sr=SR, hop_length=512)] = 1.0
    _, beat_idxs = librosa.beat.beat_track(onset_envelope=envelope, sr=SR, hop_length=512,
                                           start_bpm=float(np.atleast_1d(tempo)[0]), tightness=100)  # fmt: skip
    beat_onehot = np.zeros_like(envelope)
    beat_onehot[beat_idxs] = 1.0
    edge = np.concatenate([envelope[:, None], mfcc, chroma, peak_onehot[:, None], beat_onehot[:, None]], axis=-1)
    np.testing.assert_array_equal(d["baseline"], edge)


def test_tempo_from_beats_ignores_a_dropped_beat():
    beats = np.r_[np.arange(0, 5, 0.5), np.arange(6.0, 10, 0.5)]  # one beat missing at 5.5 s
    assert tempo_from_beats(beats, 99.0) == pytest.approx(120.0)
    assert tempo_from_beats(np.array([1.0, 1.5]), 99.0) == 99.0


def test_write_is_atomic_and_read_back_checks_keys(tmp_path, click_features):
    target = tmp_path / "out" / "x-000000000000.npz"
    write_features(target, click_features)
    assert sorted(p.name for p in target.parent.iterdir()) == ["x-000000000000.npz"]  # no temp file left
    back = read_features(target)
    assert back["sha256"] == str(click_features["sha256"])
    np.testing.assert_array_equal(back["mel"], click_features["mel"])
    assert isinstance(back["tempo_bpm"], float) and isinstance(back["sr"], int)

    partial = {k: v for k, v in click_features.items() if k not in ("chroma", "mfcc")}
    write_features(tmp_path / "partial.npz", partial)
    with pytest.raises(DataError) as err:
        read_features(tmp_path / "partial.npz")
    assert err.value.message == f"{tmp_path / 'partial.npz'}: not an mmx feature artifact: missing keys chroma, mfcc"

    bad_shape = dict(click_features, chroma=np.zeros((3, 12), np.float32))
    write_features(tmp_path / "shape.npz", bad_shape)
    with pytest.raises(DataError, match=r"chroma has shape \(3, 12\), expected \(\d+, 12\)"):
        read_features(tmp_path / "shape.npz")

    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable .npz file"):
        read_features(tmp_path / "junk.npz")
    with pytest.raises(InputMissingError):
        read_features(tmp_path / "absent.npz")


def test_find_features_and_load_beat_grid(tmp_path, click_features):
    sha = str(click_features["sha256"])
    out = tmp_path / "features"
    assert find_features(out, sha) is None  # no directory yet
    path = write_features(out / artifact_name("click120.wav", sha), click_features)
    # a decoy with the same 12-character prefix but another full hash is passed over
    write_features(out / f"a-decoy-{sha[:12]}.npz", dict(click_features, sha256=np.str_(sha[:12] + "0" * 52)))
    assert find_features(out, sha) == path
    assert find_features(out, sha.upper()) == path
    assert find_features(out, sha, params_hash="something else") is None
    assert find_features(out, "f" * 64) is None
    beats, tempo = load_beat_grid(path)
    np.testing.assert_array_equal(beats, click_features["beat_times"])
    assert tempo == pytest.approx(float(click_features["tempo_bpm"]))


def _run(paths, out, **kw):
    with FeatureRun(paths, out_dir=out, **kw) as run:
        return sorted(run, key=lambda r: r.path)


def test_skip_when_done_force_and_changed_parameters(tmp_path):
    audio = write_click(tmp_path / "music" / "a.wav", seconds=4.0)
    out = tmp_path / "features"
    (first,) = _run([audio], out)
    assert not first.skipped and first.error is None
    npz = Path(first.npz)
    assert npz.name == f"a-{sha256(audio)[:12]}.npz"
    mtime = npz.stat().st_mtime_ns

    (again,) = _run([audio], out)
    assert again.skipped and again.npz == first.npz and again.beats == first.beats
    assert npz.stat().st_mtime_ns == mtime

    # the same content under another name is done already
    copy = tmp_path / "music" / "b.wav"
    copy.write_bytes(audio.read_bytes())
    (same,) = _run([copy], out)
    assert same.skipped and same.npz == first.npz

    (forced,) = _run([audio], out, force=True)
    assert not forced.skipped and npz.stat().st_mtime_ns != mtime

    (other,) = _run([audio], out, params=FeatureParams(baseline_fps=20.0))
    assert not other.skipped
    assert read_header(npz)["baseline_fps"] == 20.0

    # a changed file is new content: analysed again under its new hash
    write_click(audio, seconds=4.0, bpm=90.0)
    (changed,) = _run([audio], out)
    assert not changed.skipped and changed.sha256 == sha256(audio) != first.sha256


def test_two_jobs_give_identical_arrays(tmp_path):
    files = [write_click(tmp_path / "music" / f"t{i}.wav", bpm=bpm, seconds=4.0 + i)
             for i, bpm in enumerate((90.0, 120.0, 140.0))]  # fmt: skip
    one = _run(files, tmp_path / "one", jobs=1)
    two = _run(files, tmp_path / "two", jobs=2)
    assert [r.error for r in one + two] == [None] * 6
    for a, b in zip(one, two):
        assert Path(a.npz).name == Path(b.npz).name
        da, db = read_features(a.npz), read_features(b.npz)
        for key in REQUIRED_KEYS:
            if isinstance(da[key], np.ndarray):
                np.testing.assert_array_equal(da[key], db[key], err_msg=key)
            else:
                assert da[key] == db[key], key


def test_truncated_ogg_is_a_clear_error_and_the_others_are_processed(tmp_path):
    good = write_click(tmp_path / "music" / "good.ogg", seconds=3.0)
    bad = write_truncated_ogg(tmp_path / "music" / "cut.ogg")
    results = _run(collect_audio([tmp_path / "music"]), tmp_path / "out", jobs=2)
    by_name = {Path(r.path).name: r for r in results}
    assert by_name["good.ogg"].error is None and Path(by_name["good.ogg"].npz).exists()
    assert by_name["cut.ogg"].error == (
        f"{bad}: truncated Ogg stream (the last page is cut off or has no end-of-stream flag)"
    )
    assert by_name["cut.ogg"].exit_code == 65
    assert [p.name for p in (tmp_path / "out").iterdir()] == [Path(by_name["good.ogg"].npz).name]
    assert good.exists()


def test_load_audio_errors_name_the_file(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEnot audio at all")
    with pytest.raises(DataError, match=rf"^{junk}: cannot decode audio"):
        load_audio(junk)
    wav = write_click(tmp_path / "full.wav", seconds=2.0)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav.read_bytes()[:50_000])
    with pytest.raises(DataError, match=rf"^{cut}: truncated WAV file: the header announces \d+ data bytes, \d+ are present"):
        load_audio(cut)
    empty = tmp_path / "empty.wav"
    import soundfile as sf

    sf.write(str(empty), np.zeros(0, np.float32), 22050)
    with pytest.raises(DataError, match=rf"^{empty}: no audio samples$"):
        load_audio(empty)
    with pytest.raises(InputMissingError):
        load_audio(tmp_path / "absent.wav")


def test_load_audio_mixes_to_mono_and_resamples(tmp_path):
    path = write_click(tmp_path / "s.wav", seconds=2.0, stereo=True)
    y, sr, channels, duration_s = load_audio(path, sr=22050)
    assert (sr, channels, duration_s) == (22050, 2, pytest.approx(2.0))
    assert y.dtype == np.float32 and y.shape == (44100,)
    mono = click_signal(seconds=2.0) * 0.75  # mean of y and 0.5 * y
    y44, _, _, _ = load_audio(path)
    np.testing.assert_allclose(y44, mono, atol=1e-4)


def test_collect_audio_expands_directories(tmp_path):
    write_click(tmp_path / "m" / "a.wav", seconds=1.0)
    write_click(tmp_path / "m" / "sub" / "b.flac", seconds=1.0)
    (tmp_path / "m" / "notes.txt").write_text("x")
    (tmp_path / "m" / ".hidden.wav").write_text("x")
    found = collect_audio([tmp_path / "m", tmp_path / "m" / "a.wav"])
    assert [p.name for p in found] == ["a.wav", "b.flac"]
    with pytest.raises(InputMissingError, match="no such file or directory"):
        collect_audio([tmp_path / "nope"])


@pytest.mark.shared_data
def test_real_tracks_with_two_jobs(shared_data, tmp_path):
    """The three real Ogg tracks, once, with --jobs 2 (this test takes CPU time)."""
    music = shared_data / "music"
    expected = {
        "introzik.ogg": ("7e8ac71c4d79f4625404ef4f9564ae70ec91056dd77f1a5cd10b908147aef7e0", 195.5),
        "frozen-mainzik-1p.ogg": ("7704fcd44eda9f6fa47e6da4232ebf961c19919abf9964f07320ed7f21f5d7c2", 321.8),
        "frozen-mainzik-2p.ogg": ("86aaeb6df03aca6d4d7eab2678a74527923b75e767ff9464674174f19870f71b", 183.7),
    }
    results = _run(collect_audio([music]), tmp_path / "features", jobs=2)
    assert sorted(Path(r.path).name for r in results) == sorted(expected)
    for r in results:
        sha, duration = expected[Path(r.path).name]
        assert r.error is None and r.sha256 == sha
        d = read_features(r.npz)
        assert d["duration_s"] == pytest.approx(duration, abs=0.1)
        assert d["mel"].shape == (1 + int(round(d["duration_s"] * 22050)) // 512, 128)
        assert d["baseline"].shape[0] == pytest.approx(d["duration_s"] * 30, abs=2)
        assert 60 < d["tempo_bpm"] < 200 and len(d["beat_times"]) > d["duration_s"] * d["tempo_bpm"] / 60 * 0.8
        assert np.isfinite(d["mel"]).all() and np.isfinite(d["baseline"]).all()
        assert find_features(tmp_path / "features", sha) == Path(r.npz)
    intro = read_features(next(r.npz for r in results if r.path.endswith("introzik.ogg")))
    assert intro["tempo_librosa_bpm"] == pytest.approx(92, abs=2)  # README: librosa beat_track ≈ 92 BPM
    assert intro["tempo_bpm"] == pytest.approx(intro["tempo_librosa_bpm"], rel=0.05)
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path / "features"))


def test_workers_take_the_longest_files_first(tmp_path):
    """Longest-first scheduling is by duration, not file size: a short WAV outweighs a long FLAC in bytes."""
    from mmx.audio.batch import audio_seconds

    write_click(tmp_path / "short.wav", seconds=1.0)
    write_click(tmp_path / "long.flac", seconds=4.0)
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    files = [tmp_path / "short.wav", tmp_path / "long.flac", tmp_path / "junk.wav"]
    assert audio_seconds(files[0]) == pytest.approx(1.0) and audio_seconds(files[1]) == pytest.approx(4.0)
    assert audio_seconds(files[2]) == 0.0
    with FeatureRun(files, out_dir=tmp_path / "out", jobs=2) as run:
        submitted = list(run._futures.values())
        results = list(run)
    assert [p.name for p in submitted] == ["long.flac", "short.wav", "junk.wav"]
    assert sorted(r.error is None for r in results) == [False, True, True]
