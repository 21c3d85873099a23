"""mmx.dataset.discover: kinds, links by content hash, missing links, bad input, loops, permissions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mmx.audio.batch import FeatureRun
from mmx.dataset.discover import discover, summarize
from mmx.errors import InputMissingError

from .audio_fixtures import sha256, write_capture_dir, write_click, write_foreign_npz, write_pose_file
from .conftest import MMX, ROOT


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    """A generated root with every kind of input and the usual problems."""
    root = tmp_path_factory.mktemp("discover")
    music = root / "music"
    a = write_click(music / "a.wav", seconds=2.0)
    b = write_click(music / "b.ogg", seconds=2.0, bpm=90.0)
    c = write_click(music / "sub" / "c.flac", seconds=3.0, bpm=140.0, stereo=True)
    (music / "mix.m3u").write_text(f"#EXTM3U\n#EXTINF:2,a\na.wav\nsub/c.flac\n{music / 'missing.mp3'}\nhttp://example.org/x.mp3\n")
    (music / "set.json").write_text(json.dumps({"tracks": [{"path": "b.ogg", "title": "b"}, {"path": "gone.wav"}]}))
    (music / "config.json").write_text(json.dumps({"volume": 3}))  # not a playlist: ignored
    (music / "names.json").write_text(json.dumps(["alice", "bob"]))  # a list, but not of tracks
    features = root / "features"
    with FeatureRun([a, c], out_dir=features) as run:
        done = {Path(r.path).name: r for r in run}
    write_foreign_npz(features / "other-tool.npz")
    np.savez(features / "broken.npz", spectrum=np.zeros((4, 4)))
    missing_track = "f" * 64
    s1 = write_capture_dir(root / "sessions", "S1", cues=[
        {"track": sha256(a), "title": "a", "path": str(a)},
        {"track": missing_track, "title": "ghost song"},
        {"track": sha256(b), "title": "b"},
    ], malformed_at=6)  # fmt: skip
    s2 = write_capture_dir(root / "sessions", "S2", cameras=["cam-9"], samples_per_camera=3)
    pose = write_pose_file(root / "pose" / "walk.pose.jsonl", frames=30, malformed_at=4)
    (root / "sessions" / "loop").symlink_to(root)  # leads back to an ancestor
    (root / "dangling.wav").symlink_to(root / "nowhere.wav")
    (root / "notes.txt").write_text("not an input")
    return {"root": root, "a": a, "b": b, "c": c, "features": features, "done": done, "s1": s1, "s2": s2,
            "pose": pose, "missing_track": missing_track, "items": discover([root])}  # fmt: skip


def _by(items, kind):
    return {Path(it["path"]).name: it for it in items if it["kind"] == kind}


def test_every_item_has_the_common_fields(tree):
    for item in tree["items"]:
        assert {"kind", "path", "sha256", "size", "missing", "warnings"} <= set(item)
        assert Path(item["path"]).is_absolute()
        json.dumps(item)  # plain JSON types only
    kinds = [it["kind"] for it in tree["items"]]
    assert kinds == sorted(kinds, key=["audio", "features", "playlist", "pose", "session", "error"].index)


def test_audio_items_and_their_features(tree):
    audio = _by(tree["items"], "audio")
    assert sorted(audio) == ["a.wav", "b.ogg", "c.flac"]
    a = audio["a.wav"]
    assert a["sha256"] == sha256(tree["a"]) and a["size"] == tree["a"].stat().st_size
    assert (a["duration_s"], a["sr"], a["channels"], a["format"]) == (pytest.approx(2.0), 44100, 1, "wav")
    assert audio["c.flac"]["channels"] == 2 and audio["c.flac"]["format"] == "flac"
    assert a["features"] == tree["done"]["a.wav"].npz and a["missing"] == []
    assert audio["b.ogg"]["features"] is None
    assert audio["b.ogg"]["missing"] == [f"audio {tree['b']} has no features (run mmx features on it)"]


def test_mmx_and_foreign_features(tree):
    feats = _by(tree["items"], "features")
    mine = feats[Path(tree["done"]["a.wav"].npz).name]
    assert mine["foreign"] is False and mine["audio_sha256"] == sha256(tree["a"])
    assert mine["audio"] == str(tree["a"]) and mine["missing"] == []
    assert mine["tempo_bpm"] == pytest.approx(tree["done"]["a.wav"].tempo_bpm)
    assert mine["n_beats"] == tree["done"]["a.wav"].beats and mine["duration_s"] == pytest.approx(2.0)
    assert {"mel", "beat_times", "baseline", "sha256"} <= set(mine["keys"])
    assert mine["sha256"] == sha256(Path(mine["path"]))

    foreign = feats["other-tool.npz"]
    assert foreign["foreign"] is True and foreign["audio_sha256"] is None and foreign["audio"] is None
    assert sorted(foreign["keys"]) == ["beats", "bpm", "hop", "melspec", "sample_rate"]
    assert foreign["foreign_keys"] == {"mel": "melspec", "tempo": "bpm", "beats": "beats"}
    assert foreign["tempo_bpm"] == 128.0 and foreign["n_beats"] == 8
    assert foreign["duration_s"] == pytest.approx(100 * 160 / 16000)


def test_npz_without_the_expected_keys_is_a_clear_error(tree):
    errors = _by(tree["items"], "error")
    broken = tree["features"] / "broken.npz"
    assert errors["broken.npz"]["error"] == (
        f"{broken}: .npz without the expected keys: no a mel spectrogram and no tempo or beat arrays (found: spectrum)"
    )


def test_playlists(tree):
    lists = _by(tree["items"], "playlist")
    m3u = lists["mix.m3u"]
    music = tree["root"] / "music"
    assert m3u["format"] == "m3u"
    assert m3u["tracks"] == [
        {"path": str(music / "a.wav"), "sha256": sha256(tree["a"]), "exists": True},
        {"path": str(music / "sub" / "c.flac"), "sha256": sha256(tree["c"]), "exists": True},
        {"path": str(music / "missing.mp3"), "sha256": None, "exists": False},
        {"path": "http://example.org/x.mp3", "sha256": None, "exists": False},
    ]
    assert m3u["missing"] == [f"playlist {music / 'mix.m3u'} lists {music / 'missing.mp3'} which does not exist"]
    js = lists["set.json"]
    assert js["format"] == "json" and [t["exists"] for t in js["tracks"]] == [True, False]
    assert js["missing"] == [f"playlist {music / 'set.json'} lists gone.wav which does not exist"]
    assert "config.json" not in lists and "names.json" not in lists


def test_session_capture_dir(tree):
    sessions = {it["session"]: it for it in tree["items"] if it["kind"] == "session"}
    assert sorted(sessions) == ["S1", "S2"]
    s1 = sessions["S1"]
    assert s1["path"] == str(tree["s1"]) and s1["title"] == "test shoot" and s1["status"] == "completed"
    assert s1["session_json"] == str(tree["s1"] / "session.json")
    assert s1["events_path"] == str(tree["s1"] / "events.jsonl")
    assert s1["sha256"] == sha256(tree["s1"] / "events.jsonl")
    # session.started + 2 camera.joined + 3 cues + 2 x 20 pose + session.ended; one malformed line
    assert s1["n_events"] == 1 + 2 + 3 + 40 + 1
    assert s1["cameras"] == ["cam-1", "cam-2"] and s1["pose_samples"] == {"cam-1": 20, "cam-2": 20}
    assert len(s1["warnings"]) == 1 and s1["warnings"][0].startswith("events.jsonl: line 6: ")
    a_cue, ghost_cue, b_cue = s1["cues"]
    assert a_cue["track"] == sha256(tree["a"]) and a_cue["features"] == tree["done"]["a.wav"].npz
    assert a_cue["audio"] == str(tree["a"]) and a_cue["offset_s"] == 0.0
    assert ghost_cue["features"] is None and ghost_cue["audio"] is None
    assert b_cue["features"] is None and b_cue["audio"] == str(tree["b"])
    assert s1["missing"] == [
        f"session S1 cued track {'f' * 12} (ghost song) but no features exist for it",
        f"session S1 cued track {sha256(tree['b'])[:12]} (b) but no features exist for it",
    ]
    assert sessions["S2"]["missing"] == ["session S2 has no music.cue events"]
    assert sessions["S2"]["pose_samples"] == {"cam-9": 3}


def test_standalone_pose_file(tree):
    pose = _by(tree["items"], "pose")["walk.pose.jsonl"]
    assert pose["samples"] == 30 and pose["fps"] == 10.0
    assert pose["n_observed"] == 20  # every third frame has nobody in it
    assert pose["duration_s"] == pytest.approx(3.0)
    assert pose["warnings"] == ["line 4: not JSON"]


def test_loops_and_dangling_links_are_reported_not_fatal(tree):
    errors = _by(tree["items"], "error")
    root = tree["root"]
    assert errors["loop"]["error"] == (
        f"symbolic link loop: {root / 'sessions' / 'loop'} -> {root} leads back to a directory being scanned; not followed"
    )
    assert errors["dangling.wav"]["error"] == f"dangling symbolic link {root / 'dangling.wav'} -> {root / 'nowhere.wav'}"
    # nothing was found twice through the loop
    paths = [it["path"] for it in tree["items"]]
    assert len(paths) == len(set(paths))


def test_summary(tree):
    summary = summarize(tree["items"])
    assert summary.counts == {"audio": 3, "features": 3, "playlist": 2, "pose": 1, "session": 2, "error": 3}
    assert summary.audio_hours == pytest.approx(7.0 / 3600)
    assert summary.pose_per_session == {"S1": {"cam-1": 20, "cam-2": 20}, "S2": {"cam-9": 3}}
    assert f"session S1 cued track {'f' * 12} (ghost song) but no features exist for it" in summary.missing
    assert len(summary.errors) == 3 and len(summary.warnings) == 2


def test_a_root_can_be_a_session_or_a_file_and_must_exist(tree):
    items = discover([tree["s1"], tree["a"]])
    assert [it["kind"] for it in items] == ["audio", "session"]
    with pytest.raises(InputMissingError, match="no such file or directory"):
        discover([tree["root"] / "nope"])


def test_same_directory_twice_is_listed_once(tree):
    items = discover([tree["root"] / "music", tree["root"] / "music" / "sub", tree["root"] / "music"])
    names = sorted(Path(it["path"]).name for it in items)
    assert names == ["a.wav", "b.ogg", "c.flac", "mix.m3u", "set.json"]


def test_links_features_to_audio_through_source_path_when_audio_is_not_scanned(tree):
    items = discover([tree["features"]])
    mine = next(it for it in items if it["kind"] == "features" and not it["foreign"] and "a-" in it["path"])
    assert mine["audio"] == str(tree["a"])


def _permission_tree(base: Path) -> dict:
    write_click(base / "ok.wav", seconds=1.0)
    secret = write_click(base / "secret.wav", seconds=1.0)
    locked = base / "locked"
    locked.mkdir()
    write_click(locked / "inside.wav", seconds=1.0)
    os.chmod(secret, 0o000)
    os.chmod(locked, 0o000)
    return {"secret": secret, "locked": locked}


def _check_permission_items(items: list[dict], tree: dict) -> None:
    by_name = {Path(it["path"]).name: it for it in items}
    assert by_name["ok.wav"]["kind"] == "audio"
    assert by_name["secret.wav"]["kind"] == "error"
    assert "Permission denied" in by_name["secret.wav"]["error"]
    assert by_name["locked"]["kind"] == "error"
    assert by_name["locked"]["error"] == f"cannot list directory {tree['locked']}: Permission denied"
    assert "inside.wav" not in by_name


def test_unreadable_file_and_directory_are_reported(tmp_path):
    """chmod 000 does not stop root: as root the scan runs as user nobody, when it can."""
    base = Path(tempfile.mkdtemp(prefix="mmx-perm-"))
    try:
        os.chmod(base, 0o755)
        tree = _permission_tree(base)
        if os.geteuid() != 0:
            _check_permission_items(discover([base]), tree)
            return

        def drop():  # noqa: ANN202
            os.setgid(65534)
            os.setuid(65534)

        try:
            proc = subprocess.run([*MMX, "discover", str(base)], capture_output=True, preexec_fn=drop, cwd="/",
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)  # fmt: skip
        except PermissionError as exc:
            pytest.skip(f"running as root and the interpreter is not executable by nobody: {exc}")
        if proc.returncode != 0 and b"Permission denied" in proc.stderr:
            pytest.skip(f"running as root and mmx cannot run as nobody: {proc.stderr[-200:]!r}")
        assert proc.returncode == 0, proc.stderr.decode()
        _check_permission_items([json.loads(line) for line in proc.stdout.splitlines()], tree)
    finally:
        for p in (base / "secret.wav", base / "locked"):
            if p.exists():
                os.chmod(p, 0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_permission_errors_reported_when_the_os_refuses(tmp_path, monkeypatch):
    """The same report when the OS refuses (simulated: the suite runs as root, which chmod cannot stop)."""
    tree = _permission_tree(tmp_path)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == tree["locked"]:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    from mmx.dataset import discover_kinds as discover_mod
    from mmx.errors import IOFailure

    real_sha = discover_mod.file_sha256

    def sha(path):
        if Path(path) == tree["secret"]:  # what sha256_file raises on EACCES
            raise IOFailure(f"cannot read {path}: Permission denied")
        return real_sha(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(discover_mod, "file_sha256", sha)
    items = discover([tmp_path])
    _check_permission_items(items, tree)
    assert next(it for it in items if it["path"] == str(tree["secret"]))["error"] == (
        f"cannot read {tree['secret']}: Permission denied"
    )


@pytest.mark.shared_data
def test_real_data_is_found(shared_data):
    items = discover([shared_data])
    audio = _by(items, "audio")
    assert sorted(audio) == ["frozen-mainzik-1p.ogg", "frozen-mainzik-2p.ogg", "introzik.ogg"]
    assert audio["introzik.ogg"]["sha256"] == "7e8ac71c4d79f4625404ef4f9564ae70ec91056dd77f1a5cd10b908147aef7e0"
    assert audio["introzik.ogg"]["duration_s"] == pytest.approx(195.5, abs=0.1)
    assert audio["introzik.ogg"]["channels"] == 2 and audio["introzik.ogg"]["sr"] == 44100
    pose = _by(items, "pose")["vtest.pose.jsonl"]
    assert (pose["samples"], pose["n_observed"], pose["fps"]) == (795, 795 - 366, 10.0)
    assert pose["duration_s"] == pytest.approx(79.5) and pose["warnings"] == []
    assert pose["sha256"] == "52abae0c4c9dc5abf3f5789a448ce54e24faa4bbf9b2e09fa7e5724ec9d4a4b6"
    assert not _by(items, "error")
