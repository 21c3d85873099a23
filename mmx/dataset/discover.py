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

The per-kind readers are in `mmx.dataset.discover_kinds`; walking, classifying and linking
here.

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

from mmx.audio.features import AUDIO_SUFFIXES
from mmx.dataset.discover_kinds import (
    PLAYLIST_SUFFIXES,
    Hashes,
    audio_item,
    error_item,
    features_item,
    json_tracks,
    looks_like_pose,
    m3u_tracks,
    playlist_item,
    pose_item,
    session_item,
    strerror_of,
)
from mmx.errors import InputMissingError, MmxError

#: Order of kinds in the inventory (then by path).
KIND_ORDER = ("audio", "features", "playlist", "pose", "session", "error")

ProgressHandler = Callable[[str], None]


# --- walking --------------------------------------------------------------------------------


@dataclass
class _Found:
    kind: str  # "file" | "session" | "error"
    path: Path
    size: int | None = None
    message: str = ""


def _walk(roots: Iterable[Path]) -> Iterator[_Found]:
    """Yield files, session directories and problems under ``roots`` (each at most once)."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    for root in roots:
        try:
            st = os.stat(root)
        except OSError as exc:
            yield _Found("error", root, message=f"cannot read {root}: {strerror_of(exc)}")
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
                yield _Found("error", directory, message=f"cannot list directory {directory}: {strerror_of(exc)}")
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
                        yield _Found("error", path, message=f"cannot read {path}: {strerror_of(exc)}")
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




def _classify(found: _Found, hashes: Hashes) -> dict[str, Any] | None:
    """The inventory item for one walked entry, or None when it is nothing mmx uses."""
    path, size = found.path, found.size or 0
    if found.kind == "error":
        return error_item(path, found.message)
    if found.kind == "session":
        return session_item(path, hashes)
    suffix = path.suffix.lower()
    try:
        if suffix in AUDIO_SUFFIXES:
            return audio_item(path, size, hashes)
        if suffix == ".npz":
            return features_item(path, size, hashes)
        if suffix in PLAYLIST_SUFFIXES:
            return playlist_item(path, size, hashes, "m3u", m3u_tracks(path))
        if suffix == ".json":
            locations = json_tracks(path, size)
            return None if locations is None else playlist_item(path, size, hashes, "json", locations)
        if suffix == ".jsonl" and looks_like_pose(path):
            return pose_item(path, size, hashes)
    except MmxError as exc:
        return error_item(path, exc.message, size=size)
    except OSError as exc:
        return error_item(path, f"cannot read {path}: {strerror_of(exc)}", size=size)
    return None


# --- linking --------------------------------------------------------------------------------


def _track_label(track: str, title: Any) -> str:
    return f"{track[:12]} ({title})" if isinstance(title, str) and title else track[:12]


def _link(items: list[dict[str, Any]], hashes: Hashes) -> None:
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
    hashes = Hashes()
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
