"""Per-kind readers of `mmx.dataset.discover`: one found file or session directory to one
inventory item (the fields of each kind are listed in that module's docstring).

Each reader returns an item dict; a problem is an ``error`` item or a warning, never an
exception, except `mmx.errors.MmxError` / `OSError`, which `mmx.dataset.discover` turns into
``error`` items. File hashes go through `Hashes`, so a file reached twice is read once.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from mmx.audio.features import AUDIO_SUFFIXES  # discover finds what `mmx features` reads
from mmx.errors import EventError, MmxError

PLAYLIST_SUFFIXES = frozenset({".m3u", ".m3u8"})
#: JSON playlists larger than this are not read (a playlist is a short list of paths).
MAX_JSON_PLAYLIST_BYTES = 16 << 20


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (raises IOFailure when it cannot be read)."""
    from mmx.audio.artifact import sha256_file

    return sha256_file(path)


class Hashes:
    """sha256 per file identity, so a file reached twice is read once."""

    def __init__(self) -> None:
        self._by_id: dict[tuple[int, int], str] = {}

    def get(self, path: str | Path) -> str:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        if key not in self._by_id:
            self._by_id[key] = file_sha256(path)
        return self._by_id[key]


def inventory_item(kind: str, path: str | Path, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "path": str(path), "sha256": None, "size": None}
    out.update(fields)
    out.setdefault("missing", [])
    out.setdefault("warnings", [])
    return out


def error_item(path: str | Path, message: str, *, size: int | None = None) -> dict[str, Any]:
    return inventory_item("error", path, size=size, error=message)


def strerror_of(exc: OSError) -> str:
    return exc.strerror or str(exc)



def audio_item(path: Path, size: int, hashes: Hashes) -> dict[str, Any]:
    import soundfile as sf

    sha = hashes.get(path)  # first: an unreadable file is reported as such, not as bad audio
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as exc:
        reason = str(exc).replace(f"Error opening {str(path)!r}: ", "").strip()
        return error_item(path, f"{path}: cannot decode audio: {reason}", size=size)
    return inventory_item(
        "audio", path, sha256=sha, size=size,
        duration_s=float(info.frames) / info.samplerate if info.samplerate else None,
        sr=int(info.samplerate), channels=int(info.channels), format=str(info.format).lower(), features=None,
    )  # fmt: skip


def _first_key(keys: Iterable[str], *needles: str) -> str | None:
    for key in keys:
        low = key.lower()
        if any(n in low for n in needles):
            return key
    return None


def features_item(path: Path, size: int, hashes: Hashes) -> dict[str, Any]:
    import numpy as np

    from mmx.audio.artifact import read_header

    try:
        header = read_header(path)
    except MmxError as exc:
        return error_item(path, exc.message, size=size)
    keys: list[str] = header["keys"]
    sha = hashes.get(path)
    if not header["missing_keys"]:
        return inventory_item(
            "features", path, sha256=sha, size=size, duration_s=header.get("duration_s"),
            audio_sha256=header.get("sha256"), foreign=False, keys=keys, tempo_bpm=header.get("tempo_bpm"),
            n_beats=header.get("n_beats"), audio=None, params_hash=header.get("params_hash"),
            source_path=header.get("source_path"),
        )  # fmt: skip
    mel_key = _first_key(keys, "mel")
    tempo_key = _first_key(keys, "tempo", "bpm")
    beat_key = _first_key(keys, "beat")
    if mel_key is None or (tempo_key is None and beat_key is None):
        lacking = [] if mel_key else ["a mel spectrogram"]
        if tempo_key is None and beat_key is None:
            lacking.append("tempo or beat arrays")
        found = ", ".join(keys) if keys else "no arrays"
        return error_item(path, f"{path}: .npz without the expected keys: no {' and no '.join(lacking)} "
                            f"(found: {found})", size=size)  # fmt: skip
    tempo = n_beats = duration = None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if tempo_key is not None and npz[tempo_key].size == 1:
                tempo = float(npz[tempo_key].reshape(-1)[0])
            if beat_key is not None and npz[beat_key].ndim == 1:
                n_beats = int(npz[beat_key].shape[0])
            sr_key, hop_key = _first_key(keys, "sr", "sample_rate"), _first_key(keys, "hop")
            mel = npz[mel_key]
            if sr_key and hop_key and mel.ndim == 2 and npz[sr_key].size == 1 and npz[hop_key].size == 1:
                sr, hop = float(npz[sr_key].reshape(-1)[0]), float(npz[hop_key].reshape(-1)[0])
                if sr > 0:
                    duration = max(mel.shape) * hop / sr
    except (ValueError, OSError, TypeError) as exc:
        return error_item(path, f"{path}: corrupt .npz ({exc})", size=size)
    return inventory_item(
        "features", path, sha256=sha, size=size, duration_s=duration, audio_sha256=None, foreign=True,
        keys=keys, tempo_bpm=tempo, n_beats=n_beats, audio=None,
        foreign_keys={"mel": mel_key, "tempo": tempo_key, "beats": beat_key},
    )  # fmt: skip


def m3u_tracks(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def json_tracks(path: Path, size: int) -> list[str] | None:
    """Track locations of a JSON playlist, or None when the file is not one.

    A playlist is a non-empty list (or ``{"tracks" | "playlist" | "items": [...]}``) of
    strings or of objects with ``path``/``file``/``location``/``src``/``url``, every one an
    audio file name or a URL.
    """
    if size > MAX_JSON_PLAYLIST_BYTES:
        return None
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict):
        doc = next((doc[k] for k in ("tracks", "playlist", "items") if isinstance(doc.get(k), list)), None)
    if not isinstance(doc, list) or not doc:
        return None
    out: list[str] = []
    for entry in doc:
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, dict):
            loc = next((entry[k] for k in ("path", "file", "location", "src", "url") if isinstance(entry.get(k), str)), None)
            if loc is None:
                return None
            out.append(loc)
        else:
            return None
    # a JSON list of anything else (names, settings) is not a playlist
    if not all(urlparse(loc).scheme in ("http", "https", "file") or Path(loc).suffix.lower() in AUDIO_SUFFIXES
               for loc in out):  # fmt: skip
        return None
    return out


def playlist_item(path: Path, size: int, hashes: Hashes, fmt: str, locations: list[str]) -> dict[str, Any]:
    tracks = []
    missing = []
    for loc in locations:
        parsed = urlparse(loc)
        if parsed.scheme == "file":
            target = Path(unquote(parsed.path))
        elif parsed.scheme in ("http", "https"):
            tracks.append({"path": loc, "sha256": None, "exists": False})
            continue
        else:
            target = Path(loc).expanduser()
            if not target.is_absolute():
                target = path.parent / target
        target = Path(os.path.normpath(target))
        sha = None
        exists = target.is_file()
        if exists:
            try:
                sha = hashes.get(target)
            except (MmxError, OSError):
                sha = None
        else:
            missing.append(f"playlist {path} lists {loc} which does not exist")
        tracks.append({"path": str(target), "sha256": sha, "exists": exists})
    return inventory_item("playlist", path, sha256=hashes.get(path), size=size, format=fmt, tracks=tracks, missing=missing)


def looks_like_pose(path: Path) -> bool:
    if path.name.endswith(".pose.jsonl"):
        return True
    try:
        with open(path, "rb") as fp:
            first = fp.readline(1 << 16)
        obj = orjson.loads(first)
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("header"), dict) and "joints" in obj["header"]


def pose_item(path: Path, size: int, hashes: Hashes) -> dict[str, Any]:
    from mmx.events import iter_lines

    samples = observed = 0
    fps = None
    t_min = t_max = None
    warnings: list[str] = []
    with open(path, "rb") as fp:
        for line_no, line in iter_lines(fp):
            if line is None:
                warnings.append(f"line {line_no}: line too long")
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                warnings.append(f"line {line_no}: not JSON")
                continue
            if not isinstance(obj, dict):
                warnings.append(f"line {line_no}: not a JSON object")
                continue
            if "header" in obj:
                if isinstance(obj["header"], dict) and type(obj["header"].get("fps")) in (int, float):
                    fps = float(obj["header"]["fps"])
                continue
            t = obj.get("t")
            if type(t) not in (int, float) or "joints" not in obj:
                warnings.append(f"line {line_no}: a pose frame needs a number 't' and 'joints'")
                continue
            joints = obj["joints"]
            if joints is not None and not isinstance(joints, dict):
                warnings.append(f"line {line_no}: 'joints' must be an object or null")
                continue
            samples += 1
            observed += joints is not None
            t_min = t if t_min is None else min(t_min, t)
            t_max = t if t_max is None else max(t_max, t)
    duration = None
    if t_min is not None:
        duration = float(t_max - t_min) + (1.0 / fps if fps else 0.0)
    missing = [] if observed else [f"pose file {path} has no frame with a body in it"]
    return inventory_item(
        "pose", path, sha256=hashes.get(path), size=size, samples=samples, duration_s=duration, fps=fps,
        n_observed=observed, missing=missing, warnings=warnings,
    )  # fmt: skip


def session_item(directory: Path, hashes: Hashes) -> dict[str, Any]:
    from mmx.events import read_events

    session_json = directory / "session.json"
    events_path = directory / "events.jsonl"
    warnings: list[str] = []
    meta: dict[str, Any] = {}
    try:
        loaded = orjson.loads(session_json.read_bytes())
        if isinstance(loaded, dict):
            meta = loaded
        else:
            warnings.append("session.json: not a JSON object")
    except orjson.JSONDecodeError as exc:
        warnings.append(f"session.json: not JSON ({exc})")
    except OSError as exc:
        return error_item(session_json, f"cannot read {session_json}: {strerror_of(exc)}")

    cameras: dict[str, None] = {}
    meta_cams = meta.get("cameras")
    if isinstance(meta_cams, dict):
        meta_cams = [{"camera": k} for k in meta_cams]
    for cam in meta_cams if isinstance(meta_cams, list) else []:
        cid = cam if isinstance(cam, str) else (cam.get("camera") or cam.get("id")) if isinstance(cam, dict) else None
        if isinstance(cid, str):
            cameras[cid] = None
    pose: Counter[str] = Counter()
    cues: list[dict[str, Any]] = []
    n_events = 0
    first_ts = last_ts = None
    session_id = next((meta[k] for k in ("session", "id", "session_id") if isinstance(meta.get(k), str)), None)
    title = meta.get("title") if isinstance(meta.get("title"), str) else None

    def on_error(exc: EventError) -> None:
        warnings.append(f"events.jsonl: {exc.message}")

    try:
        with open(events_path, "rb") as fp:
            for event in read_events(fp, on_error=on_error):
                n_events += 1
                first_ts = event.ts if first_ts is None else min(first_ts, event.ts)
                last_ts = event.ts if last_ts is None else max(last_ts, event.ts)
                if session_id is None and event.session:
                    session_id = event.session
                data = event.data
                if event.type == "pose.sample":
                    pose[data["camera"]] += 1
                    cameras.setdefault(data["camera"], None)
                elif event.type in ("camera.joined", "camera.changed") and isinstance(data.get("camera"), str):
                    cameras.setdefault(data["camera"], None)
                elif event.type == "session.started" and title is None and isinstance(data.get("title"), str):
                    title = data["title"]
                elif event.type == "music.cue":
                    cues.append({
                        "track": data["track"], "title": data.get("title"), "path": data.get("path"),
                        "started_at": data.get("started_at", event.ts), "offset_s": data.get("offset_s", 0.0),
                        "features": None, "audio": None,
                    })  # fmt: skip
    except OSError as exc:
        return error_item(events_path, f"cannot read {events_path}: {strerror_of(exc)}")
    sid = session_id or directory.name
    missing = []
    if not pose:
        missing.append(f"session {sid} has no pose.sample events")
    if not cues:
        missing.append(f"session {sid} has no music.cue events")
    return inventory_item(
        "session", directory, sha256=hashes.get(events_path), size=events_path.stat().st_size, session=sid,
        title=title, status=meta.get("status") if isinstance(meta.get("status"), str) else None,
        session_json=str(session_json), events_path=str(events_path), n_events=n_events,
        cameras=sorted(cameras), pose_samples=dict(sorted(pose.items())), started_at=first_ts, ended_at=last_ts,
        cues=cues, missing=missing, warnings=warnings,
    )  # fmt: skip
