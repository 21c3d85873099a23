"""`mmx ghost`: the AI director that proposes beat-aware cuts under operator supervision."""

from __future__ import annotations

import asyncio
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
    mode: str | None = typer.Option(None, "--mode", help="manual, ghost or autopilot; fixes the mode instead of following the server's director.mode (replay: autopilot or manual)."),
    replay_path: str | None = typer.Option(None, "--replay", metavar="CAPTURE_DIR|EVENTS", help="Run the policy in simulated time over a recorded session (a capture directory, an events file or -)."),
    evaluate: bool = typer.Option(False, "--eval", help="With --replay: report precision/recall/F1 against the recorded cuts instead of the events."),
    json_out: bool = typer.Option(False, "--json", help="With --eval: the report as one JSON line even on a terminal."),
) -> None:
    """Propose beat-aware cuts from pose and music; execute them under operator supervision.

    Reads the server's event stream (GET /v1/events with pose.sample), or events from EVENTS
    or stdin (-), and keeps per-camera signals: presence (share of joints seen with
    confidence >= 0.5), framing (subject box size and centering), motion energy (joint speed
    normalized by body size over the last second) and stillness. With a music.cue and the
    track's feature artifact in --features it knows the beat grid.

    It proposes (ghost.proposed) a target camera with a score, reasons (each feature's
    contribution in words and numbers), cut_at on the next beat at least --lead-beats ahead
    (downbeats preferred when known) and expires_at. Without music, or for a track without
    features, it proposes on its own clock and says so in the reasons. Rules: minimum shot,
    maximum shot (then a forced proposal), minimum score gain over program, cooldown after a
    veto, nothing while a hold is on, never a lost camera, no cut to a camera placed within
    jump_cut_deg of program.

    Supervision follows the server's mode: manual shows proposals only; ghost executes a
    proposal once accepted (POST /v1/director/cut at cut_at, at once if accepted late);
    autopilot executes at cut_at unless vetoed. Unanswered proposals become ghost.expired.
    Decisions also arrive as ghost.accepted / ghost.vetoed events from other tools.

    stdout: every proposal and decision as JSON Lines (src "ghost"), also posted to the
    server's POST /v1/events so the ledger records them. stderr: messages, and on a terminal
    a banner with the pending proposal and a countdown to its beat; when stdin is a terminal
    the keys a (accept), v (veto), h (hold), r (release) act on it. If the server goes away
    ghost says so, stops proposing and reconnects with backoff (giving up after 10 minutes,
    exit 69).

    --replay runs the same policy in simulated time over a recorded session and writes the
    ghost's events (autopilot: its own program timeline; manual: shadowing the recorded
    cuts). With --eval it reports, against the recorded director.cut events: precision,
    recall and F1 of cut times within 0.5 s, camera agreement, the share of proposals within
    70 ms of a beat and the shot-length distribution. Same input, same output.

    Files:
    The policy file (--policy, TOML; unknown keys are an error). The defaults, shipped as
    mmx/ghost/default_policy.toml:

    \b
        [weights]  score = sum of weight x signal, every signal in [0, 1]
          presence = 0.2    framing = 0.25    motion = 0.45    stillness = 0.1
        [rules]
          min_shot_s = 2.0         no proposal before the shot is this long
          max_shot_s = 12.0        a proposal is forced at this shot length
          min_gain = 0.15          score gain over program needed (hysteresis)
          min_score = 0.2          lower-scoring cameras are never proposed
          veto_cooldown_s = 10.0   a vetoed camera rests this long
          expiry_cooldown_s = 2.0  an expired proposal's camera rests this long
          jump_cut_deg = 20.0      no cut within this azimuth of program
          lead_beats = 1           cut on the Nth beat after now + min_lead_s
          min_lead_s = 0.25        least time before cut_at
          prefer_downbeat_within_beats = 3   move up to N beats to a downbeat
          expire_after_s = 2.0     unanswered proposals expire after cut_at
          clock_period_s = 0.5     own clock without a beat grid
        [signals]
          confidence_min = 0.5     window_s = 1.0    stale_s = 1.0
          coord_margin = 0.0       framing_ideal_height = 0.6
          motion_scale_bps = 0.5   stillness_max_bps = 0.15
          stillness_full_s = 1.0

    Feature artifacts DIR/<stem>-<sha256[:12]>.npz written by mmx features (beat_times).

    Environment:
    MMX_TOKEN is the default of --token.

    Examples:

    \b
        mmx ghost --server http://127.0.0.1:8750 --features feats/ | mmx ledger push
        mmx ghost --mode autopilot --lead-beats 2 --policy calm.toml
        mmx ghost --replay ~/.local/share/mmx/sessions/01JD3J... --features feats/ --eval
        mmx ghost --replay events.jsonl --policy calm.toml | jq -c 'select(.type=="ghost.proposed")'

    See also:
    mmx-serve(1), mmx-features(1), mmx-ledger-push(1)
    """
    from mmx.ghost.policy import MODES, load_policy

    config = load_policy(policy_file)
    if lead_beats is not None:
        config = config.with_rules(lead_beats=lead_beats)
    if mode is not None and mode not in MODES:
        raise typer.BadParameter(f"{mode!r} is not one of {', '.join(MODES)}", param_hint="--mode")
    if features is not None and not features.is_dir():
        console.print(f"[yellow]warning:[/] --features {features} is not a directory: proposing on own clock")
    if replay_path is not None:
        _replay(replay_path, config=config, features=features, mode=mode or "autopilot", evaluate=evaluate, json_out=json_out)
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

    table = Table(title=f"ghost replay ({report['mode']}, {report['duration_s']:.1f} s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("reference_cuts", "ghost_cuts", "matched", "precision", "recall", "f1", "camera_agreement",
                "proposals", "forced", "expired", "on_beat_share", "on_beat_share_with_grid"):  # fmt: skip
        value = report[key]
        table.add_row(key, "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value)))
    for which in ("shots_ghost", "shots_reference"):
        d = report[which]
        table.add_row(which, f"n={d['count']} median={d['median_s']} s [{d['min_s']}…{d['max_s']}]")
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
