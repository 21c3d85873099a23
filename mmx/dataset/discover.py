"""Find the training-data lane's inputs under some roots and link them into an inventory.

`discover` walks directories (``os.scandir``, following symbolic links, each directory
visited once by ``(st_dev, st_ino)``; a link back to an ancestor is a loop and is reported)
and classifies what it finds. Every item is a dict, one JSON line of `mmx discover`:

always
    ``kind``, ``path`` (absolute), ``sha256`` (hex of the file's bytes; of ``events.jsonl``
    for a session), ``size`` (bytes), ``missing`` (list of human sentences: links that
    could not be made, e.g. ``session S cued track T but no features exist for it``) and
    ``warnings`` (malformed lines as ``line N: …``).
``audio`` (.wav .flac .ogg .oga .mp3 .aif .aiff)
    ``duration_s``, ``sr`` (Hz), ``channels``, ``format`` (``ogg``, ``wav``, …),
    ``features`` (path of the artifact with the same content hash, or null).
``features`` (.npz)
    ``duration_s``, ``audio_sha256`` (the artifact's ``sha256``; null for a foreign file),
    ``foreign`` (not written by `mmx features` but carrying a mel spectrogram plus tempo or
    beat arrays), ``keys`` (array names found), ``tempo_bpm``, ``n_beats``, ``audio``
    (path of the audio file with that content hash, or null).
``playlist`` (.m3u, .m3u8, or .json holding a list of tracks)
    ``format`` (``m3u`` | ``json``), ``tracks``: ``[{path, sha256 | null, exists}]``.
``session`` (a directory holding ``session.json`` and ``events.jsonl``)
    ``session`` (id), ``title``, ``session_json``, ``events_path``, ``n_events``,
    ``cameras`` (ids), ``pose_samples`` ({camera: count}), ``started_at``/``ended_at``
    (Unix seconds of the first/last event), ``cues``: ``[{track, title, path, started_at,
    offset_s, features, audio}]`` from the ``music.cue`` events, linked by content hash.
``pose`` (a standalone pose file: ``*.pose.jsonl`` or JSON Lines opening with a
    ``{"header": …}`` line, the format of ``vtest.pose.jsonl``)
    ``samples`` (frame lines), ``duration_s``, ``fps`` (from the header or null),
    ``n_observed`` (frames whose ``joints`` are not null).
``error`` (anything found but unusable: permission denied, a symbolic link loop or a
    dangling link, an ``.npz`` without the expected keys, undecodable audio)
    ``error`` (the message); ``sha256`` may be null.

Library code: nothing is printed; problems are items or warnings, never exceptions, except
`InputMissingError` for a root that does not exist.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import orjson

from mmx.errors import EventError, InputMissingError, MmxError

AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff"})
PLAYLIST_SUFFIXES = frozenset({".m3u", ".m3u8"})
#: Order of kinds in the inventory (then by path).
KIND_ORDER = ("audio", "features", "playlist", "pose", "session", "error")
#: JSON playlists larger than this are not read (a playlist is a short list of paths).
MAX_JSON_PLAYLIST_BYTES = 16 << 20

ProgressHandler = Callable[[str], None]


def _sha256(path: str | Path) -> str:
    from mmx.audio.artifact import sha256_file

    return sha256_file(path)


class _Hashes:
    """sha256 per file identity, so a file reached twice is read once."""

    def __init__(self) -> None:
        self._by_id: dict[tuple[int, int], str] = {}

    def get(self, path: str | Path) -> str:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        if key not in self._by_id:
            self._by_id[key] = _sha256(path)
        return self._by_id[key]


def _item(kind: str, path: str | Path, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": kind, "path": str(path), "sha256": None, "size": None}
    out.update(fields)
    out.setdefault("missing", [])
    out.setdefault("warnings", [])
    return out


def _error(path: str | Path, message: str, *, size: int | None = None) -> dict[str, Any]:
    return _item("error", path, size=size, error=message)


# --- walking --------------------------------------------------------------------------------


@dataclass
class _Found:
    kind: str  # "file" | "session" | "error"
    path: Path
    size: int | None = None
    message: str = ""


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _walk(roots: Iterable[Path]) -> Iterator[_Found]:
    """Yield files, session directories and problems under ``roots`` (each at most once)."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root in roots:
        try:
            st = os.stat(root)
        except OSError as exc:
            yield _Found("error", root, message=f"cannot read {root}: {_strerror(exc)}")
            continue
        if not stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key not in seen_files:
                seen_files.add(key)
                yield _Found("file", root, size=st.st_size)
            continue
        # (directory, identities of its ancestors including itself)
        stack: list[tuple[Path, tuple[tuple[int, int], ...]]] = []
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue
        seen_dirs.add(key)
        stack.append((root, (key,)))
        while stack:
            directory, ancestors = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                yield _Found("error", directory, message=f"cannot list directory {directory}: {_strerror(exc)}")
                continue
            names = {e.name for e in entries}
            if "session.json" in names and "events.jsonl" in names:
                yield _Found("session", directory)
                continue  # a capture directory's stills/ are not inputs of their own
            subdirs: list[tuple[Path, tuple[tuple[int, int], ...]]] = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                try:
                    est = entry.stat(follow_symlinks=True)
                except FileNotFoundError:
                    if entry.is_symlink():
                        yield _Found("error", path, message=f"dangling symbolic link {path} -> {os.readlink(path)}")
                    continue
                except OSError as exc:
                    if entry.is_symlink() and exc.errno == errno.ELOOP:  # a link pointing at itself
                        yield _Found("error", path, message=f"symbolic link loop at {path}")
                    else:
                        yield _Found("error", path, message=f"cannot read {path}: {_strerror(exc)}")
                    continue
                ekey = (est.st_dev, est.st_ino)
                if stat.S_ISDIR(est.st_mode):
                    if ekey in ancestors:
                        target = os.readlink(path) if entry.is_symlink() else ""
                        yield _Found("error", path, message=f"symbolic link loop: {path} -> {target} leads back to "
                                                            "a directory being scanned; not followed")  # fmt: skip
                        continue
                    if ekey in seen_dirs:
                        continue  # reached before through another path
                    seen_dirs.add(ekey)
                    subdirs.append((path, (*ancestors, ekey)))
                elif stat.S_ISREG(est.st_mode):
                    if ekey in seen_files:
                        continue
                    seen_files.add(ekey)
                    yield _Found("file", path, size=est.st_size)
            stack.extend(reversed(subdirs))


# --- per-kind readers ------------------------------------------------------------------------


def _audio_item(path: Path, size: int, hashes: _Hashes) -> dict[str, Any]:
    import soundfile as sf

    sha = hashes.get(path)  # first: an unreadable file is reported as such, not as bad audio
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as exc:
        reason = str(exc).replace(f"Error opening {str(path)!r}: ", "").strip()
        return _error(path, f"{path}: cannot decode audio: {reason}", size=size)
    return _item(
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


def _features_item(path: Path, size: int, hashes: _Hashes) -> dict[str, Any]:
    import numpy as np

    from mmx.audio.artifact import read_header

    try:
        header = read_header(path)
    except MmxError as exc:
        return _error(path, exc.message, size=size)
    keys: list[str] = header["keys"]
    sha = hashes.get(path)
    if not header["missing_keys"]:
        return _item(
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
        return _error(path, f"{path}: .npz without the expected keys: no {' and no '.join(lacking)} "
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
        return _error(path, f"{path}: corrupt .npz ({exc})", size=size)
    return _item(
        "features", path, sha256=sha, size=size, duration_s=duration, audio_sha256=None, foreign=True,
        keys=keys, tempo_bpm=tempo, n_beats=n_beats, audio=None,
        foreign_keys={"mel": mel_key, "tempo": tempo_key, "beats": beat_key},
    )  # fmt: skip


def _m3u_tracks(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _json_tracks(path: Path, size: int) -> list[str] | None:
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


def _playlist_item(path: Path, size: int, hashes: _Hashes, fmt: str, locations: list[str]) -> dict[str, Any]:
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
    return _item("playlist", path, sha256=hashes.get(path), size=size, format=fmt, tracks=tracks, missing=missing)


def _looks_like_pose(path: Path) -> bool:
    if path.name.endswith(".pose.jsonl"):
        return True
    try:
        with open(path, "rb") as fp:
            first = fp.readline(1 << 16)
        obj = orjson.loads(first)
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("header"), dict) and "joints" in obj["header"]


def _pose_item(path: Path, size: int, hashes: _Hashes) -> dict[str, Any]:
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
    return _item(
        "pose", path, sha256=hashes.get(path), size=size, samples=samples, duration_s=duration, fps=fps,
        n_observed=observed, missing=missing, warnings=warnings,
    )  # fmt: skip


def _session_item(directory: Path, hashes: _Hashes) -> dict[str, Any]:
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
        return _error(session_json, f"cannot read {session_json}: {_strerror(exc)}")

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
        return _error(events_path, f"cannot read {events_path}: {_strerror(exc)}")
    sid = session_id or directory.name
    missing = []
    if not pose:
        missing.append(f"session {sid} has no pose.sample events")
    if not cues:
        missing.append(f"session {sid} has no music.cue events")
    return _item(
        "session", directory, sha256=hashes.get(events_path), size=events_path.stat().st_size, session=sid,
        title=title, status=meta.get("status") if isinstance(meta.get("status"), str) else None,
        session_json=str(session_json), events_path=str(events_path), n_events=n_events,
        cameras=sorted(cameras), pose_samples=dict(sorted(pose.items())), started_at=first_ts, ended_at=last_ts,
        cues=cues, missing=missing, warnings=warnings,
    )  # fmt: skip


def _classify(found: _Found, hashes: _Hashes) -> dict[str, Any] | None:
    """The inventory item for one walked entry, or None when it is nothing mmx uses."""
    path, size = found.path, found.size or 0
    if found.kind == "error":
        return _error(path, found.message)
    if found.kind == "session":
        return _session_item(path, hashes)
    suffix = path.suffix.lower()
    try:
        if suffix in AUDIO_SUFFIXES:
            return _audio_item(path, size, hashes)
        if suffix == ".npz":
            return _features_item(path, size, hashes)
        if suffix in PLAYLIST_SUFFIXES:
            return _playlist_item(path, size, hashes, "m3u", _m3u_tracks(path))
        if suffix == ".json":
            locations = _json_tracks(path, size)
            return None if locations is None else _playlist_item(path, size, hashes, "json", locations)
        if suffix == ".jsonl" and _looks_like_pose(path):
            return _pose_item(path, size, hashes)
    except MmxError as exc:
        return _error(path, exc.message, size=size)
    except OSError as exc:
        return _error(path, f"cannot read {path}: {_strerror(exc)}", size=size)
    return None


# --- linking --------------------------------------------------------------------------------


def _track_label(track: str, title: Any) -> str:
    return f"{track[:12]} ({title})" if isinstance(title, str) and title else track[:12]


def _link(items: list[dict[str, Any]], hashes: _Hashes) -> None:
    audio_by_sha: dict[str, list[str]] = defaultdict(list)
    features_by_sha: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        if item["kind"] == "audio":
            audio_by_sha[item["sha256"]].append(item["path"])
        elif item["kind"] == "features" and item.get("audio_sha256"):
            features_by_sha[item["audio_sha256"]].append(item)
    for group in (*audio_by_sha.values(), *features_by_sha.values()):
        group.sort(key=lambda x: x["path"] if isinstance(x, dict) else x)

    def audio_for(sha: str, hint_path: Any) -> str | None:
        if audio_by_sha.get(sha):
            return audio_by_sha[sha][0]
        # a features artifact remembers where its audio was; trust it only if the bytes match
        if isinstance(hint_path, str) and hint_path and os.path.isfile(hint_path):
            try:
                if hashes.get(hint_path) == sha:
                    return str(Path(hint_path).absolute())
            except (MmxError, OSError):
                return None
        return None

    for item in items:
        kind = item["kind"]
        if kind == "audio":
            feats = features_by_sha.get(item["sha256"])
            if feats:
                item["features"] = feats[0]["path"]
            else:
                item["missing"].append(f"audio {item['path']} has no features (run mmx features on it)")
        elif kind == "features" and not item["foreign"]:
            sha = item["audio_sha256"]
            item["audio"] = audio_for(sha, item.get("source_path"))
            if item["audio"] is None:
                item["missing"].append(
                    f"features {item['path']}: no audio file with sha256 {sha[:12]} was found "
                    f"(it was made from {item.get('source_path')})"
                )
        elif kind == "session":
            for cue in item["cues"]:
                feats = features_by_sha.get(cue["track"])
                if feats:
                    cue["features"] = feats[0]["path"]
                    cue["audio"] = feats[0].get("audio")
                else:
                    cue["audio"] = audio_for(cue["track"], cue.get("path"))
                    item["missing"].append(
                        f"session {item['session']} cued track {_track_label(cue['track'], cue.get('title'))} "
                        "but no features exist for it"
                    )


# --- entry points ---------------------------------------------------------------------------


def discover(roots: Iterable[str | Path], *, on_progress: ProgressHandler | None = None) -> list[dict[str, Any]]:
    """Scan ``roots`` (directories or files) and return the linked inventory items.

    Items are sorted by kind (audio, features, playlist, pose, session, error) then path;
    see the module docstring for their fields. Unreadable files, permission errors and
    symbolic link loops become ``error`` items; malformed lines become ``warnings`` of
    their item. Raises InputMissingError when a root does not exist.
    """
    paths = []
    for root in roots:
        path = Path(os.path.abspath(root))
        if not os.path.lexists(path):
            raise InputMissingError(f"no such file or directory: {root}")
        paths.append(path)
    hashes = _Hashes()
    items: list[dict[str, Any]] = []
    for found in _walk(paths):
        if on_progress is not None:
            on_progress(str(found.path))
        item = _classify(found, hashes)
        if item is not None:
            items.append(item)
    _link(items, hashes)
    items.sort(key=lambda it: (KIND_ORDER.index(it["kind"]) if it["kind"] in KIND_ORDER else 99, it["path"]))
    return items


@dataclass
class Summary:
    """Totals of an inventory for the human report."""

    counts: dict[str, int] = field(default_factory=dict)
    audio_hours: float = 0.0
    features_hours: float = 0.0
    pose_per_session: dict[str, dict[str, int]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def summarize(items: Iterable[dict[str, Any]]) -> Summary:
    """Counts per kind, hours of audio and of features, pose samples per session, problems."""
    out = Summary()
    counts: Counter[str] = Counter()
    for item in items:
        kind = item["kind"]
        counts[kind] += 1
        if kind == "audio" and item.get("duration_s"):
            out.audio_hours += item["duration_s"] / 3600.0
        elif kind == "features" and item.get("duration_s"):
            out.features_hours += item["duration_s"] / 3600.0
        elif kind == "session":
            out.pose_per_session[item["session"]] = dict(item.get("pose_samples") or {})
        elif kind == "error":
            out.errors.append(item["error"])
        out.missing.extend(item.get("missing") or [])
        out.warnings.extend(f"{item['path']}: {w}" for w in item.get("warnings") or [])
    out.counts = {k: counts[k] for k in KIND_ORDER if counts[k]}
    return out
