"""`mmx discover`: inventory audio, feature artifacts, playlists, sessions and pose files."""

from __future__ import annotations

import sys

import typer

from mmx.commands._common import console, write_jsonl
from mmx.fileio import atomic_file

#: How many missing links / problems the stderr summary lists before "… and N more".
_LIST_LIMIT = 20


def _write_inventory(items: list[dict], out: str) -> None:
    if out == "-":
        for item in items:
            write_jsonl(item)
        return
    with atomic_file(out) as fp:
        for item in items:
            write_jsonl(item, fp)


def _print_list(title: str, lines: list[str], style: str) -> None:
    if not lines:
        return
    console.print(f"[{style}]{title} ({len(lines)}):[/]", markup=True, soft_wrap=True)
    for line in lines[:_LIST_LIMIT]:
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    if len(lines) > _LIST_LIMIT:
        console.print(f"  … and {len(lines) - _LIST_LIMIT} more (see the inventory's 'missing' and 'warnings' fields)", markup=False, soft_wrap=True)


def discover(
    roots: list[str] = typer.Argument(..., metavar="ROOT...", help="Directories or files to scan; '-' reads roots from stdin, one per line."),
    out: str = typer.Option("-", "-o", "--out", metavar="FILE|-", help="Write the inventory here instead of stdout ('-'); the file is replaced atomically."),
) -> None:  # fmt: skip
    """Inventory audio, feature artifacts, playlists, session captures and pose files under some roots.

    Walks every ROOT (following symbolic links, each directory once; a link back to a
    directory being scanned is a loop, reported and not followed) and writes one JSON line
    per item found, sorted by kind then path. It links feature artifacts to audio files by
    content hash (sha256 of the bytes) and sessions to tracks by their music.cue events, and
    lists every link it could not make in the item's "missing" field. Unreadable files,
    permission errors and symbolic link loops become "error" items; malformed lines of
    events or pose files become "warnings" ("line N: …"); the scan always goes on.

    What is recognised: audio (.wav .flac .ogg .oga .mp3 .aif .aiff); feature artifacts
    (.npz from mmx features, and foreign .npz carrying a mel spectrogram plus tempo or beat
    arrays); playlists (.m3u, .m3u8, and .json holding a list of tracks or {"tracks": [...]});
    session capture directories (a directory holding session.json and events.jsonl, as
    mmx serve writes them); standalone pose files (*.pose.jsonl, or JSON Lines whose first
    line is {"header": {..., "joints": ...}}, one {"frame", "t", "joints"} per line).

    Inventory format (JSON Lines, one object per item). Every item:

    \b
        kind      audio | features | playlist | session | pose | error
        path      absolute path (the directory for a session)
        sha256    hex sha256 of the file's bytes (events.jsonl for a session)
        size      bytes
        missing   ["session S cued track T but no features exist for it", ...]
        warnings  ["events.jsonl: line 7: not JSON ...", ...]

    Per kind:

    \b
        audio     duration_s, sr, channels, format, features (npz path | null)
        features  duration_s, audio_sha256 (null when foreign), foreign, keys
        features  tempo_bpm, n_beats, audio (path of the audio with that hash | null)
        features  mmx artifacts also: params_hash, source_path
        features  foreign ones also: foreign_keys {mel, tempo, beats} (key names)
        playlist  format (m3u | json), tracks [{path, sha256 | null, exists}]
        session   session (id), title, status, session_json, events_path, n_events
        session   cameras, pose_samples {camera: n}, started_at, ended_at
        session   cues [{track, title, path, started_at, offset_s, features, audio}]
        pose      samples, duration_s, fps, n_observed (frames with joints)
        error     error (the message)

    A cue's features and audio are the paths of the artifact and the audio file whose
    content hash is the cue's track (null when none was found). Session times (started_at,
    ended_at) are the Unix seconds of the first and last event.

    stderr: a summary — items per kind, hours of audio and of features, pose samples per
    session and camera, what is missing, errors and malformed lines.

    Exit status:
    0 also when some items are errors or carry warnings: they are in the inventory and the
    summary. 66 when a ROOT does not exist.

    Examples:

    \b
        mmx discover sessions/ features/ > inventory.jsonl
        mmx discover music/ features/ sessions/ -o inventory.jsonl
        mmx discover sessions/ features/ | jq -c 'select(.kind == "session") | .missing'
        mmx features music/ -o features/ && mmx discover sessions/ features/ | mmx pair - -o dataset/

    See also:
    mmx-features(1), mmx-pair(1)
    """
    from mmx.dataset.discover import discover as run_discover
    from mmx.dataset.discover import summarize

    paths: list[str] = []
    for root in roots:
        paths.extend((ln.strip() for ln in sys.stdin if ln.strip()) if root == "-" else [root])
    with console.status("scanning …") as status:
        items = run_discover(paths, on_progress=lambda p: status.update(f"scanning {p}"))
    _write_inventory(items, out)

    summary = summarize(items)
    counts = ", ".join(f"{n} {kind}" for kind, n in summary.counts.items()) or "nothing"
    console.print(f"[bold]found:[/] {counts}", markup=True, highlight=False, soft_wrap=True)
    console.print(f"audio: {summary.audio_hours:.2f} h; features: {summary.features_hours:.2f} h", highlight=False, soft_wrap=True)
    for session, per_camera in summary.pose_per_session.items():
        total = sum(per_camera.values())
        cams = ", ".join(f"{cam} {n}" for cam, n in per_camera.items()) or "none"
        console.print(f"session {session}: {total} pose samples ({cams})", highlight=False, soft_wrap=True)
    _print_list("missing", summary.missing, "yellow")
    _print_list("errors", summary.errors, "red")
    _print_list("malformed lines", summary.warnings, "yellow")
    if out != "-":
        console.print(f"wrote {len(items)} items to {out}", highlight=False, soft_wrap=True)
