"""`mmx ghost-train`: learn the ghost's weights and thresholds from the operator's decisions.

A command of its own rather than `mmx ghost train`: `mmx ghost` takes an optional EVENTS
argument, so ``mmx ghost train`` would read a file named ``train``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from mmx.commands._common import console, report_line_error, write_jsonl
from mmx.errors import DataError


def ghost_train(
    inputs: list[Path] = typer.Argument(..., metavar="CAPTURE_DIR|SESSIONS_DIR|EVENTS|LEDGER...", help="Recorded sessions: capture directories, directories of them, events files (JSON Lines) or ledgers (SQLite)."),
    output: str = typer.Option(..., "-o", "--output", metavar="POLICY.toml|-", help="Write the trained policy here (TOML, for mmx ghost --policy); - for stdout."),
    policy_file: Path | None = typer.Option(None, "--policy", help="Base policy: the rules, signal constants and fallbacks the trained one keeps [default: the shipped policy]."),
    folds: int = typer.Option(5, "--folds", min=2, max=50, help="Cross-validation folds, by session (at most one per session)."),
    json_out: bool = typer.Option(False, "--json", help="The training report (the [provenance] table) as one JSON line on stdout; not with -o -."),
) -> None:  # fmt: skip
    """Learn the ghost's weights and thresholds from what the operator decided in recorded sessions.

    Replays each session's pose through the ghost's own signals (presence, framing, motion
    energy, stillness) and takes, at each cut by the operator, the chosen camera against
    every other camera the operator could have cut to that saw someone, and at each proposal
    the operator answered, accepted against vetoed (autopilot's acceptances and expiries are
    not answers). A pairwise logistic regression (numpy, Newton's method, L2 1.0) learns a
    weight per signal and, from the proposals, the score gain the operator accepts.

    The policy written keeps the base policy and replaces the four weights (normalized to
    sum 1 in absolute value), min_gain (the gain accepted half the time; kept without
    answered proposals), min_score (the 5th percentile of the chosen cameras' scores) and
    min_shot_s / max_shot_s (the 10th / 90th percentile of the operator's shots; kept with
    fewer than 10). Its [provenance] table records the inputs' sha256, every count (cuts,
    cuts left out because the chosen camera saw nobody or no other camera did, answered
    proposals, pairs), the model's raw coefficients and the held-out scores.

    Cross-validated by session, never by moment: each fold's model is judged on sessions it
    never saw, against the base policy on the same moments: camera agreement (at each
    operator cut, would the policy's highest-scoring camera be the operator's?), pair
    accuracy, log loss, accept/veto accuracy.

    Too little data is refused (exit 65) rather than turned into a bad policy: fewer than
    30 usable decisions (operator cuts plus answered proposals) or fewer than 2 sessions.
    Sessions need their pose: capture directories hold it; a ledger fed from a server's
    default stream has no pose.sample events.

    stdout: the policy with -o -, else nothing (or the report with --json). stderr: the
    report as a table, bad lines as "line N: ..." (skipped; exit 65 after writing).

    Examples:

    \b
        mmx ghost-train ~/.local/share/mmx/sessions -o trained.toml
        mmx ghost-train sessions/01JD3J... sessions/01JD4K... -o - > trained.toml
        mmx ghost --replay sessions/01JD5M... --eval --policy trained.toml

    See also:
    mmx-ghost(1), mmx-ledger-push(1)
    """
    from mmx.ghost.config import load_policy
    from mmx.ghost.supervision import collect
    from mmx.ghost.train import train, write_policy

    if json_out and output == "-":
        raise typer.BadParameter("--json writes the report on stdout; give -o a file", param_hint="--json")
    base = load_policy(policy_file)
    sup = collect(inputs, config=base, on_error=report_line_error)
    base_source = "default" if policy_file is None else str(policy_file)
    training = train(sup, base=base, base_source=base_source, folds=folds)
    if output == "-":
        sys.stdout.write(training.toml())
        sys.stdout.flush()
    else:
        write_policy(training, output)
    _render(training.report())
    console.print(f"ghost-train: policy written to {'stdout' if output == '-' else output}", soft_wrap=True)
    if json_out:
        write_jsonl(training.report())
    bad = sup.counts["bad_lines"]
    if bad:
        raise DataError(f"{bad} bad line(s) were skipped", hint="the policy was written from the rest")


def _render(report: dict[str, Any]) -> None:
    from rich.table import Table

    h = report["heldout"]
    c = report["counts"]
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    table = Table(title=f"ghost-train: {c['decisions']} decisions in {c['sessions_used']} sessions, "
                        f"held out by session in {h['folds']} folds")  # fmt: skip
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("operator cuts used / found", f"{c['cuts_used']} / {c['operator_cuts']}")
    table.add_row("  chosen saw nobody", str(c["cuts_chosen_sees_nobody"]))
    table.add_row("  no other saw anyone", str(c["cuts_no_alternative"]))
    table.add_row("answered proposals", f"{c['proposals_used']} ({c['accepted']} accepted, {c['vetoed']} vetoed)")
    for f, w in zip(report["model"]["features"], report["model"]["logit_weights"]):
        table.add_row(f"logit weight {f}", f"{w:+.3f}")
    table.add_row("held-out camera agreement", fmt(h["camera_agreement"]))
    table.add_row("  base policy", fmt(h["base_camera_agreement"]))
    table.add_row("held-out pair accuracy", fmt(h["pair_accuracy"]))
    table.add_row("held-out log loss", fmt(h["log_loss"]))
    table.add_row("held-out accept/veto accuracy", fmt(h["proposal_accuracy"]))
    console.print(table)
    for note in report.get("notes") or []:
        console.print(f"ghost-train: {note}")
