"""`mmx ghost`: the AI director that proposes beat-aware cuts under operator supervision."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from mmx.commands._common import console, report_line_error, run_until_signal, wants_json, write_jsonl
from mmx.errors import EX_DATAERR, EX_INTERRUPTED, DataError

DEFAULT_SERVER = "http://127.0.0.1:8750"


def ghost(
    events: str | None = typer.Argument(None, metavar="EVENTS|-", help="Read events from this JSON Lines file or - (stdin) instead of the server's stream."),
    server: str | None = typer.Option(None, "--server", help=f"Base URL of mmx serve [default: {DEFAULT_SERVER} when no EVENTS is given]."),
    token: str | None = typer.Option(None, "--token", envvar="MMX_TOKEN", help="The token mmx serve printed at start."),
    features: Path | None = typer.Option(None, "--features", help="Directory of mmx features artifacts (<stem>-<sha12>.npz) for beat grids."),
    policy_file: Path | None = typer.Option(None, "--policy", help="Policy file (TOML); keys left out keep the defaults."),
    lead_beats: int | None = typer.Option(None, "--lead-beats", min=1, help="Cut on the Nth beat after now + min_lead_s [default: rules.lead_beats, 1]."),
    mode: str | None = typer.Option(None, "--mode", help="manual, ghost or autopilot; fixes the mode instead of following the server's director.mode (replay: autopilot, manual or recorded)."),
    replay_path: str | None = typer.Option(None, "--replay", metavar="CAPTURE_DIR|EVENTS", help="Run the policy in simulated time over a recorded session (a capture directory, an events file or -)."),
    evaluate: bool = typer.Option(False, "--eval", help="With --replay: report the metrics against the operator's decisions (and, with --mode recorded, the share of the live run's proposals reproduced) instead of the events."),
    json_out: bool = typer.Option(False, "--json", help="With --eval: the report as one JSON line even on a terminal."),
) -> None:
    """Propose beat-aware cuts from pose and music; execute them under operator supervision.

    Reads the server's event stream (GET /v1/events with pose.sample), or events from EVENTS
    or stdin (-), and keeps per-camera signals: presence (share of joints seen with
    confidence >= 0.5), framing (subject box size and centering), motion energy (joint speed
    normalized by body size over the last second) and stillness. With a music.cue and the
    track's feature artifact in --features it knows the beat grid and each bar's energy.

    It proposes (ghost.proposed) a target camera with a score, reasons (one object per
    signal, gain, music and timing, each with a sentence in "text", e.g. "cam-2 subject
    moving 2.1 body-lengths/s"), cut_at on the next beat at least --lead-beats ahead
    (downbeats preferred when known) and expires_at. Without music, or for a track without
    features, it proposes on its own clock and says so in the reasons.

    Judgment: a camera that sees nobody or scores under min_score is never proposed; no
    proposal before min_shot_s, then only with a score gain of min_gain over program; at
    max_shot_s the gain is waived, and when no camera is worth cutting to the shot is held
    and ghost.held (camera, shot_s, reasons camera by camera) says why, instead of a forced
    cut. Never a lost camera, a camera within jump_cut_deg of program, a camera cooling down
    after a veto or an expiry, nothing while a hold is on. Cut density follows the music:
    the shot rules scale with the energy of the bar playing (loud bars: shorter shots). In
    manual and ghost mode a proposal budget guards the operator's attention: one proposal
    pending at a time, at most max_proposals_per_min (6) in any minute, and after an
    unanswered one a pause that doubles with each further unanswered one (5 s up to 60 s).

    Supervision follows the server's mode: manual shows proposals only; ghost executes a
    proposal once accepted (POST /v1/director/cut at cut_at, at once if accepted late);
    autopilot executes at cut_at unless vetoed. Unanswered proposals become ghost.expired.
    Decisions also arrive as ghost.accepted / ghost.vetoed events from other tools (the
    console's POST /v1/ghost/{proposal}/accept|veto).

    stdout: every proposal and decision as JSON Lines (src "ghost"), also posted to the
    server's POST /v1/events so the ledger records them, and ghost.online / ghost.offline
    (when it connects or sees a session start: its policy, fixed mode and features
    directory; when it loses the server) so a replay can re-enact the run. stderr:
    messages, and on a terminal a banner with the pending proposal, a countdown to its beat
    and its reasons in words, or the shot being held and why; when stdin is a terminal the
    keys a (accept), v (veto), h (hold), r (release) act on it. If the server goes away
    ghost says so, stops proposing and reconnects with backoff (giving up after 10 minutes,
    exit 69).

    --replay runs the same policy in simulated time over a recorded session and writes the
    ghost's events. --mode autopilot (default): its own program timeline; manual: shadowing
    the recorded cuts; recorded: re-enacting the live run (the recorded mode, cuts and
    operator decisions, proposing only while the live ghost was online, with its recorded
    policy and features unless --policy / --features are given). With --eval it reports,
    against the operator's decisions only (cuts by the operator and ghost cuts the operator
    accepted; autopilot cuts are not the operator's): precision, recall and F1 of cut times
    within 0.5 s, camera agreement, the share of proposals within 70 ms of a beat,
    proposals per minute, share expired, shots held, the correlation of bar energy with
    cuts per bar (and cuts per minute in quiet, medium and loud bars) and the shot-length
    distribution; with --mode recorded also the share of the live run's proposals the
    replay reproduced (same camera, cut_at within one beat). Same input, same output.

    Learn weights and thresholds from the operator's decisions with mmx ghost-train.

    Files:
    The policy file (--policy, TOML; unknown keys are an error; a [provenance] table is
    kept as metadata). The defaults, shipped as mmx/ghost/default_policy.toml:

    \b
        [weights]  score = sum of weight x signal, every signal in [0, 1]
          presence = 0.2    framing = 0.25    motion = 0.45    stillness = 0.1
        [rules]
          min_shot_s = 2.0         no proposal before the shot is this long
          max_shot_s = 12.0        gain waived from here; nothing worth it: ghost.held
          min_gain = 0.15          score gain over program needed (hysteresis)
          min_score = 0.2          lower-scoring or empty cameras are never proposed
          veto_cooldown_s = 10.0   a vetoed camera rests this long
          expiry_cooldown_s = 2.0  an expired proposal's camera rests this long
          jump_cut_deg = 20.0      no cut within this azimuth of program
          lead_beats = 1           cut on the Nth beat after now + min_lead_s
          min_lead_s = 0.25        least time before cut_at
          prefer_downbeat_within_beats = 3   move up to N beats to a downbeat
          expire_after_s = 2.0     unanswered proposals expire after cut_at
          clock_period_s = 0.5     own clock without a beat grid
          max_proposals_per_min = 6   budget in manual and ghost mode
          expiry_pause_s = 5.0     pause after an unanswered proposal ...
          expiry_pause_growth = 2.0   ... times this per further one ...
          expiry_pause_max_s = 60.0   ... up to this
          held_repeat_s = 30.0     ghost.held again this often while held
          energy_influence = 0.5   shot rules x (1 + k (1 - 2 e)), e bar energy 0..1
        [signals]
          confidence_min = 0.5     window_s = 1.0    stale_s = 1.0
          coord_margin = 0.0       framing_ideal_height = 0.6
          motion_scale_bps = 0.5   stillness_max_bps = 0.15
          stillness_full_s = 1.0

    Feature artifacts DIR/<stem>-<sha256[:12]>.npz written by mmx features (beat_times,
    onset_env for the bar energy).

    Environment:
    MMX_TOKEN is the default of --token.

    Examples:

    \b
        mmx ghost --server http://127.0.0.1:8750 --features feats/ | mmx ledger push
        mmx ghost --mode autopilot --lead-beats 2 --policy calm.toml
        mmx ghost --replay ~/.local/share/mmx/sessions/01JD3J... --features feats/ --eval
        mmx ghost --replay ~/.local/share/mmx/sessions/01JD3J... --mode recorded --eval
        mmx ghost --replay events.jsonl --policy calm.toml | jq -c 'select(.type=="ghost.held")'

    See also:
    mmx-ghost-train(1), mmx-serve(1), mmx-features(1), mmx-ledger-push(1)
    """
    from mmx.ghost.policy import MODES, load_policy

    config = load_policy(policy_file)
    if lead_beats is not None:
        config = config.with_rules(lead_beats=lead_beats)
    if mode is not None and mode not in MODES and not (replay_path is not None and mode == "recorded"):
        raise typer.BadParameter(f"{mode!r} is not one of {', '.join(MODES)}", param_hint="--mode")
    if features is not None and not features.is_dir():
        console.print(f"[yellow]warning:[/] --features {features} is not a directory: proposing on own clock")
    if replay_path is not None:
        # recorded mode re-enacts the live run with the policy it recorded, unless told otherwise
        given = policy_file is not None or lead_beats is not None or mode != "recorded"
        _replay(replay_path, config=config if given else None, features=features, mode=mode or "autopilot",
                evaluate=evaluate, json_out=json_out)  # fmt: skip
        return
    if evaluate:
        raise typer.BadParameter("--eval needs --replay", param_hint="--eval")
    _live(events=events, server=server, token=token, config=config, features=features, mode=mode)


def _replay(path: str, *, config: Any, features: Path | None, mode: str, evaluate: bool, json_out: bool) -> None:
    from mmx.events import encode
    from mmx.ghost.replay import evaluate as evaluate_replay
    from mmx.ghost.replay import replay

    source: Any = sys.stdin.buffer if path == "-" else path
    result = replay(source, config=config, features_dir=features, mode=mode,
                    on_error=lambda exc: report_line_error(exc, path))  # fmt: skip
    for note in dict.fromkeys(result.notes):
        console.print(f"ghost: {note}")
    if mode == "recorded":
        console.print(f"ghost: replaying with the {result.policy_source} policy")
    if evaluate:
        report = evaluate_replay(result)
        if wants_json(json_out):
            write_jsonl(report)
        else:
            _render_report(report)
    else:
        out = sys.stdout.buffer
        for event in result.events:
            out.write(encode(event))
            out.flush()
    if result.bad_lines:
        console.print(f"[yellow]{result.bad_lines} bad line(s) skipped[/]")
        raise typer.Exit(EX_DATAERR)


def _render_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    def fmt(value: Any) -> str:
        return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    table = Table(title=f"ghost replay ({report['mode']}, {report['duration_s']:.1f} s) against the operator's decisions")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("reference_cuts", "reference_left_out", "ghost_cuts", "matched", "precision", "recall", "f1",
                "camera_agreement", "proposals", "proposals_per_min", "expired_share", "forced", "held",
                "on_beat_share", "on_beat_share_with_grid"):  # fmt: skip
        table.add_row(key, fmt(report[key]))
    for which in ("energy_cut_rate", "energy_cut_rate_reference"):
        e = report[which]
        rates = " ".join(f"{k} {fmt(v)}" for k, v in e["cuts_per_min"].items())
        table.add_row(which, f"r={fmt(e['correlation'])} over {e['bars']} bars; cuts/min {rates}")
    for which in ("shots_ghost", "shots_reference"):
        d = report[which]
        table.add_row(which, f"n={d['count']} median={d['median_s']} s [{d['min_s']}…{d['max_s']}]")
    if "fidelity" in report:
        f = report["fidelity"]
        table.add_row("live proposals reproduced", f"{f['reproduced']} of {f['live_proposals']} ({fmt(f['share'])})")
        table.add_row("replay's extra proposals", fmt(f["extra"]))
    console.print(table)


def _live(*, events: str | None, server: str | None, token: str | None, config: Any, features: Path | None,
          mode: str | None) -> None:  # fmt: skip
    from mmx.ghost.beats import BeatLibrary
    from mmx.ghost.live import GhostRunner, ServerClient
    from mmx.ghost.policy import Policy

    if events is None and server is None:
        server = DEFAULT_SERVER
    client = ServerClient(server, token) if server else None
    policy = Policy(config, beats=BeatLibrary(features), mode=mode or "manual", follow_mode=mode is None)

    def notify(message: str) -> None:
        console.print(f"ghost: {message}", markup=False, highlight=False, soft_wrap=True)

    runner = GhostRunner(policy, client=client, out=sys.stdout.buffer, notify=notify)
    banner = console.is_terminal
    keys = banner and events != "-" and sys.stdin.isatty()
    import asyncio

    interrupted = asyncio.run(_run(runner, events, banner=banner, keys=keys))
    if runner.output_closed:
        return
    if interrupted:
        raise typer.Exit(EX_INTERRUPTED)
    if runner.bad_lines:
        raise DataError(f"{runner.bad_lines} bad line(s) in {events} were skipped")


async def _run(runner: Any, events: str | None, *, banner: bool, keys: bool) -> bool:
    """Run the ghost until its input ends or SIGINT/SIGTERM; True when SIGINT stopped it."""
    from mmx.ghost.live import TerminalUI

    async def main() -> None:
        if banner:
            async with TerminalUI(console, runner, keys=keys):
                await runner.run(events)
        else:
            await runner.run(events)

    return await run_until_signal(main(), runner.stop)
