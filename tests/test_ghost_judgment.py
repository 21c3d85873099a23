"""The ghost's judgment on real pose: never an empty or weak camera, ghost.held instead of a
forced cut, the proposal budget, cut density following the music's energy, reasons in words."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from mmx.ghost.beats import BeatGrid, BeatLibrary, read_beat_grid
from mmx.ghost.policy import Policy, load_policy
from mmx.ghost.replay import ReplayResult, evaluate, replay_events
from mmx.ghost.signals import SUBJECT_MIN_PRESENCE, CameraSignals
from mmx.ghost.simulate import EventFactory, beat_grid_npz

from .pose_views import PLACEMENTS, VIEWS, pose_events

pytestmark = pytest.mark.usefixtures("shared_data")

T0 = 1_800_000_000.0
TRACK = "d" * 64
BEAT_S = 0.5


def beats(n: int = 2000) -> BeatLibrary:
    return BeatLibrary(None, grids={TRACK: BeatGrid(track=TRACK, beat_times=tuple(i * BEAT_S for i in range(n)))})


class Rig:
    """A policy on the three real-pose cameras, cam-1 on program at T0, music from T0; an
    operator that answers each proposal with ``answer(policy, output)`` (None: never)."""

    def __init__(self, *, mode: str, config=None, library: BeatLibrary | None = None, answer=None) -> None:
        self.make = EventFactory("j")
        self.n = 0

        def new_id() -> str:
            self.n += 1
            return f"p{self.n}"

        self.policy = Policy(config or load_policy(), beats=library or beats(), mode=mode, id_factory=new_id,
                             follow_mode=False)  # fmt: skip
        self.answer = answer
        self.outputs: list = []
        self.shadow = {cam: CameraSignals(self.policy.config.signals) for cam in VIEWS}
        self.violations: list[str] = []
        for cam, az in PLACEMENTS.items():
            self._feed(self.make("camera.joined", {"camera": cam, "placement": {"azimuth_deg": az}}, T0 - 1))
        self._feed(self.make("director.cut", {"to": "cam-1", "by": "operator"}, T0))
        self._feed(self.make("music.cue", {"track": TRACK, "started_at": T0, "offset_s": 0.0}, T0))

    def _feed(self, event) -> None:
        outs = self.policy.feed(event)
        self._take(outs)

    def _take(self, outs) -> None:
        for out in outs:
            self.outputs.append(out)
            if out.type == "ghost.proposed":
                self._check(out)
                if self.answer is not None:
                    self._take(self.answer(self.policy, out) or [])

    def _check(self, out) -> None:
        """The target's own signals, kept apart from the policy's, at the proposal's time."""
        sig = self.shadow[out.data["to"]].at(out.at)
        w = self.policy.config.weights
        score = w.presence * sig.presence + w.framing * sig.framing + w.motion * sig.motion + w.stillness * sig.stillness
        if sig.presence < SUBJECT_MIN_PRESENCE:
            self.violations.append(f"{out.data['proposal']} to {out.data['to']}: nobody seen")
        if score < self.policy.config.rules.min_score - 1e-9:
            self.violations.append(f"{out.data['proposal']} to {out.data['to']}: score {score:.3f}")

    def run(self, seconds: float) -> Rig:
        for event in pose_events(T0, seconds, self.make):
            self.shadow[event.data["camera"]].add(event.data["t"], event.data["joints"])
            self._feed(event)
        self._take(self.policy.step(T0 + seconds))
        return self

    def of(self, etype: str) -> list:
        return [o for o in self.outputs if o.type == etype]


def test_a_no_proposal_ever_targets_an_empty_or_weak_camera():
    """(a) Real pose with long stretches where two of the three cameras see nobody: every
    proposal's target sees someone and scores at least min_score, in every mode; where the
    old rules forced a cut at max_shot_s, the shot is held and ghost.held says why."""
    quick = load_policy().with_rules(max_shot_s=5.0)
    for mode, answer in (("autopilot", None), ("ghost", lambda p, o: p.accept(o.data["proposal"], o.at + 0.2)),
                         ("manual", None)):  # fmt: skip
        rig = Rig(mode=mode, config=quick, answer=answer).run(79.0)
        assert len(rig.of("ghost.proposed")) >= 3, mode  # manual: nobody answers, the budget pauses
        assert rig.violations == [], (mode, rig.violations)
    # the test can fail: in this recording an empty camera often still scores above
    # min_score (motion energy lingers for a second after the subject leaves the frame)
    rig = Rig(mode="autopilot", config=quick).run(79.0)
    lingering = 0
    probe = {cam: CameraSignals() for cam in VIEWS}
    for event in pose_events(T0, 79.0, EventFactory("probe")):
        sig = probe[event.data["camera"]]
        sig.add(event.data["t"], event.data["joints"])
        s = sig.at(event.data["t"])
        w = load_policy().weights
        if s.presence < SUBJECT_MIN_PRESENCE and w.motion * s.motion >= load_policy().rules.min_score:
            lingering += 1
    assert lingering >= 10
    held = rig.of("ghost.held")
    assert held, "79 s of real pose with max_shot_s 5 and long empty stretches: some shot is held"
    h = held[0]
    assert h.data["camera"] in VIEWS
    head, *rest = h.data["reasons"]
    assert head["feature"] == "held" and f"holding {h.data['camera']} after" in head["text"]
    cams = {r["camera"]: r for r in rest if r["feature"] == "candidate"}
    assert set(cams) == set(VIEWS) - {h.data["camera"]}
    for r in cams.values():
        assert r["why"] in ("no_subject", "stale", "min_score", "cooldown", "jump_cut") and r["text"].startswith(r["camera"])
    # a forced proposal (max shot passed) goes only to a camera that sees someone
    forced = [p for p in rig.of("ghost.proposed") if any(r["feature"] == "forced" for r in p.data["reasons"])]
    assert all("cutting to the best camera that sees someone" in next(r["text"] for r in p.data["reasons"]
                                                                       if r["feature"] == "forced") for p in forced)  # fmt: skip


def test_held_is_said_once_per_shot_and_repeated_after_held_repeat_s():
    rig = Rig(mode="autopilot", config=load_policy().with_rules(max_shot_s=3.0, held_repeat_s=10.0))
    # only cam-1 (program) sees anyone: every other camera is empty for 30 s
    empty = {"cam-1": VIEWS["cam-1"]}
    for event in pose_events(T0, 30.0, rig.make, views=empty):
        rig._feed(event)
    held = rig.of("ghost.held")
    assert [round(h.at - T0) for h in held] == [3, 13, 23]
    assert rig.of("ghost.proposed") == [] and rig.of("cut") == []
    texts = [r["text"] for r in held[0].data["reasons"]]
    assert texts[1:3] == ["cam-2 sends no pose", "cam-3 sends no pose"]
    assert rig.policy.snapshot(T0 + 24)["held"]["camera"] == "cam-1"


def test_b_an_operator_who_never_answers_gets_at_most_the_budget_and_growing_pauses():
    """(b) Three minutes of ghost mode on real pose, nobody answering: never more than
    max_proposals_per_min in any 60 s, one pending at a time, and the pause after each
    unanswered proposal grows."""
    rules = load_policy().rules
    rig = Rig(mode="ghost", config=load_policy().with_rules(max_shot_s=4.0)).run(180.0)
    props = [p.at for p in rig.of("ghost.proposed")]
    assert len(props) >= 4
    assert max(sum(1 for u in props if t <= u < t + 60) for t in props) <= rules.max_proposals_per_min
    assert rig.of("cut") == []
    expired = rig.of("ghost.expired")
    assert all(e.data["reason"] == "unanswered" for e in expired) and len(expired) >= len(props) - 1
    # one pending at a time: each proposal comes after the previous one expired
    for prev_exp, nxt in zip(expired, props[1:]):
        assert nxt >= prev_exp.at
    waits = [nxt - e.at for e, nxt in zip(expired, props[1:])]
    expected = [min(rules.expiry_pause_max_s, rules.expiry_pause_s * rules.expiry_pause_growth ** k) for k in range(len(waits))]
    for w, e in zip(waits, expected):
        assert w >= e - 1e-6
    assert waits[-1] >= 4 * waits[0]
    # an operator who answers every proposal is not paused, only capped
    eager = Rig(mode="ghost", config=load_policy().with_rules(max_shot_s=4.0),
                answer=lambda p, o: p.accept(o.data["proposal"], o.at + 0.3)).run(180.0)
    eager_props = [p.at for p in eager.of("ghost.proposed")]
    assert len(eager_props) > len(props)
    assert max(sum(1 for u in eager_props if t <= u < t + 60) for t in eager_props) <= rules.max_proposals_per_min
    assert eager.policy.budget.streak == 0


def test_the_budget_says_why_it_rests_and_autopilot_is_not_budgeted():
    rig = Rig(mode="ghost", config=load_policy().with_rules(max_proposals_per_min=2, max_shot_s=3.0))
    rig.answer = lambda p, o: p.veto(o.data["proposal"], o.at + 0.1)  # answered, so no pause: only the cap
    rig.run(40.0)
    props = rig.of("ghost.proposed")
    assert len(props) == 2
    resting = rig.policy.snapshot(props[1].at + 1.0)["resting"]
    assert resting["feature"] == "budget" and "2 proposals in the last minute" in resting["text"]
    held = [h for h in rig.of("ghost.held") if any(r["feature"] == "budget" for r in h.data["reasons"])]
    assert held and "not proposing now" in held[0].data["reasons"][0]["text"]
    auto = Rig(mode="autopilot", config=load_policy().with_rules(max_proposals_per_min=2, max_shot_s=3.0)).run(40.0)
    assert len(auto.of("ghost.proposed")) > 2


def _loud_quiet(t: float) -> float:
    """Onset strength: 16 s loud, 16 s quiet, over and over (bars of 2 s at 120 BPM)."""
    return 4.0 if (t // 16) % 2 == 0 else 0.5


def test_cut_density_follows_the_music_energy(tmp_path):
    beat_grid_npz(tmp_path / f"song-{TRACK[:12]}.npz", track=TRACK, bpm=120.0, duration_s=400.0, energy=_loud_quiet)
    grid = read_beat_grid(tmp_path / f"song-{TRACK[:12]}.npz")
    assert len(grid.bar_starts) == 200
    # 96 quiet bars and 104 loud ones: two levels, each sharing its mean rank
    assert sorted(set(grid.bar_energy)) == pytest.approx([47.5 / 199, (96 + 199) / 2 / 199])
    library = BeatLibrary(tmp_path)
    rig = Rig(mode="autopilot", library=library).run(192.0)
    cuts = [c.at - T0 for c in rig.of("cut")]
    loud = sum(1 for t in cuts if (t // 16) % 2 == 0)
    quiet = len(cuts) - loud
    assert loud >= 1.5 * max(quiet, 1), (loud, quiet)
    energy = [r for r in rig.of("ghost.proposed")[0].data["reasons"] if r["feature"] == "energy"][0]
    assert energy["value"] in {round(e, 4) for e in grid.bar_energy} and "music" in energy["text"] and "bar" in energy["text"]
    # --eval reports it: the correlation of bar energy with cuts per bar
    result = ReplayResult(mode="autopilot", predicted=[(c.at, c.data["to"]) for c in rig.of("cut")],
                          start=T0, end=T0 + 192.0, stats=dict(rig.policy.stats))  # fmt: skip
    result.cues.append((rig.policy.cue, T0))
    report = evaluate(result)["energy_cut_rate"]
    assert report["correlation"] > 0.1 and report["bars"] == 96  # cuts per 2 s bar are 0 or 1: a weak r
    assert report["cuts_per_min"]["loud"] >= 1.5 * report["cuts_per_min"]["quiet"]
    # with energy_influence 0 the music has no say
    flat = Rig(mode="autopilot", library=library, config=load_policy().with_rules(energy_influence=0.0)).run(192.0)
    flat_cuts = [c.at - T0 for c in flat.of("cut")]
    flat_loud = sum(1 for t in flat_cuts if (t // 16) % 2 == 0)
    assert abs(flat_loud - (len(flat_cuts) - flat_loud)) < abs(loud - quiet)


def test_reasons_are_sentences_with_their_numbers():
    rig = Rig(mode="manual").run(40.0)
    p = rig.of("ghost.proposed")[0]
    by = {r["feature"]: r for r in p.data["reasons"]}
    assert set(by) >= {"presence", "framing", "motion", "stillness", "timing"} and ("gain" in by or "forced" in by)
    cam = p.data["to"]
    assert by["motion"]["text"].startswith(f"{cam} subject moving ") and "body-lengths/s" in by["motion"]["text"]
    assert by["presence"]["text"].startswith(f"{cam} sees ") and "of 19 joints" in by["presence"]["text"]
    assert "of the frame height" in by["framing"]["text"]
    for feat in ("presence", "framing", "motion", "stillness"):
        r = by[feat]
        assert {"feature", "camera", "value", "weight", "contribution", "text"} <= set(r)
        assert r["contribution"] == pytest.approx(r["value"] * r["weight"], abs=1e-3)
    assert p.data["score"] == pytest.approx(sum(by[f]["contribution"] for f in ("presence", "framing", "motion", "stillness")), abs=1e-3)


def test_the_banner_shows_reasons_in_words_and_the_held_shot():
    from mmx.ghost.banner import TerminalUI
    from mmx.ghost.live import GhostRunner

    rig = Rig(mode="ghost", config=load_policy().with_rules(max_shot_s=3.0))
    clock = [T0]
    runner = GhostRunner(rig.policy, clock=lambda: clock[0])
    ui = TerminalUI(None, runner, keys=True)

    def screen() -> str:
        buf = io.StringIO()
        Console(file=buf, width=160, color_system=None).print(ui.render())
        return buf.getvalue()

    for event in pose_events(T0, 30.0, rig.make):
        rig._feed(event)
        clock[0] = event.ts
        if rig.policy.pending is not None:
            break
    text = screen()
    p = rig.policy.pending
    assert f"cam-1 → {p.to}" in text and "cut in" in text
    assert "body-lengths/s" in text or "joints" in text or "frame height" in text
    assert "cut on the beat" in text
    held = Rig(mode="ghost", config=load_policy().with_rules(max_shot_s=3.0))
    runner = GhostRunner(held.policy, clock=lambda: clock[0])
    ui = TerminalUI(None, runner, keys=False)
    for event in pose_events(T0, 5.0, held.make, views={"cam-1": VIEWS["cam-1"]}):
        held._feed(event)
        clock[0] = event.ts
    text = screen()
    assert "held cam-1" in text and "holding cam-1 after 3.0 s" in text and "cam-2 sends no pose" in text


def test_policy_rules_of_the_budget_are_checked():
    from mmx.errors import DataError
    from mmx.ghost.policy import parse_policy

    for text, message in (("max_proposals_per_min = 0", "max_proposals_per_min must be at least 1"),
                          ("expiry_pause_growth = 0.5", "expiry_pause_growth must be at least 1"),
                          ("energy_influence = 1.0", "energy_influence must be less than 1"),
                          ("held_repeat_s = 0", "held_repeat_s must be positive")):  # fmt: skip
        with pytest.raises(DataError, match=message):
            parse_policy(f"[rules]\n{text}\n")


def test_replay_emits_held_and_counts_it():
    make = EventFactory("r")
    events = [make("camera.joined", {"camera": c, "placement": {"azimuth_deg": az}}, T0 - 1) for c, az in PLACEMENTS.items()]
    events.append(make("director.cut", {"to": "cam-1", "by": "operator"}, T0))
    events += list(pose_events(T0, 20.0, make, views={"cam-1": VIEWS["cam-1"]}))
    result = replay_events(events, config=load_policy().with_rules(max_shot_s=4.0))
    # the replay opens on cam-1 (recorded cuts are the reference, not its program), then holds
    assert [e.type for e in result.events] == ["ghost.proposed", "ghost.accepted", "director.cut", "ghost.held"]
    assert result.events[-1].data["camera"] == "cam-1" and evaluate(result)["held"] == 1
