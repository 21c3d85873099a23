"""Deterministic scenario tests of the ghost policy on generated pose and music streams."""

from __future__ import annotations

import math

import pytest

from mmx.errors import DataError, EventError, InputMissingError
from mmx.events import JOINT_NAMES, decode
from mmx.ghost.beats import BeatGrid, BeatLibrary, read_beat_grid
from mmx.ghost.policy import Policy, PolicyConfig, Rules, default_policy_text, load_policy, parse_policy
from mmx.ghost.signals import CameraSignals, CheckedJoints, SignalParams, clean_joints
from mmx.ghost.simulate import EventFactory, beat_grid_npz, pose_joints

T0 = 1_800_000_000.0
BEAT_S = 0.5  # 120 BPM
TRACK = "b" * 64
NO_FEATURES_TRACK = "c" * 64
PLACEMENTS = {"cam-1": -60.0, "cam-2": 60.0, "cam-3": 180.0}


def grid(*, downbeat_every: int | None = None, n: int = 4000) -> BeatGrid:
    beats = tuple(i * BEAT_S for i in range(n))
    downs = frozenset(beats[::downbeat_every]) if downbeat_every else frozenset()
    return BeatGrid(track=TRACK, beat_times=beats, downbeats=downs, tempo_bpm=120.0)


class Scenario:
    """Three cameras (placed 120° apart), cam-1 on program at T0, music with beats from T0."""

    def __init__(self, *, mode: str = "manual", config: PolicyConfig | None = None, placements=None,
                 cue: str | None = TRACK, beats: BeatGrid | None = None, program: str | None = "cam-1") -> None:  # fmt: skip
        self.make = EventFactory("t")
        self.n = 0

        def new_id() -> str:
            self.n += 1
            return f"p{self.n}"

        grids = {TRACK: beats or grid()}
        self.policy = Policy(config or load_policy(), beats=BeatLibrary(None, grids=grids), mode=mode,
                             id_factory=new_id, follow_mode=False)  # fmt: skip
        self.outputs = []
        for cam, az in (placements or PLACEMENTS).items():
            self.feed("camera.joined", {"camera": cam, "placement": {"azimuth_deg": az}}, T0 - 1)
        if program:
            self.feed("director.cut", {"from": None, "to": program, "by": "operator"}, T0)
        if cue:
            self.feed("music.cue", {"track": cue, "title": "t", "started_at": T0, "offset_s": 0.0}, T0)
        self.moving: set[str] = set()

    def feed(self, etype, data, ts, src="serve"):
        outs = self.policy.feed(self.make(etype, data, ts, src=src))
        self.outputs += outs
        return outs

    def run(self, t_from: float, t_to: float, *, moving=None, fps: float = 30.0, react=None, cams=None):
        """Pose samples for every camera from ``t_from`` to ``t_to`` (seconds after T0)."""
        moving = moving if moving is not None else set()
        k0, k1 = round(t_from * fps), round(t_to * fps)
        for k in range(k0, k1):
            t = T0 + k / fps
            for cam in cams or sorted(PLACEMENTS):
                m = moving(t) if callable(moving) else (cam in moving)
                joints = pose_joints(t, motion=1.0 if (m is True or (isinstance(m, set) and cam in m)) else 0.0)
                outs = self.feed("pose.sample", {"camera": cam, "t": t, "joints": joints}, t)
                if react:
                    for out in outs:
                        more = react(self.policy, out)
                        if more:
                            self.outputs += more

    def of(self, etype):
        return [o for o in self.outputs if o.type == etype]


def on_beat(t: float) -> bool:
    k = (t - T0) / BEAT_S
    return abs(k - round(k)) < 1e-9


# -------------------------------------------------------------------------------- proposals


def test_a_motion_burst_on_camera_2_yields_a_proposal_to_camera_2_landing_on_a_beat():
    s = Scenario()
    s.run(0, 4)
    assert s.of("ghost.proposed") == []  # everyone still: no reason to cut
    s.run(4, 6, moving={"cam-2"})
    props = s.of("ghost.proposed")
    assert len(props) == 1
    p = props[0]
    assert p.data["to"] == "cam-2" and p.data["from"] == "cam-1"
    assert on_beat(p.data["cut_at"])
    assert p.data["cut_at"] - p.at >= load_policy().rules.min_lead_s
    assert p.data["cut_at"] - p.at < load_policy().rules.min_lead_s + BEAT_S  # the next beat, not a later one
    assert p.data["expires_at"] == p.data["cut_at"] + load_policy().rules.expire_after_s
    reasons = {r["feature"]: r for r in p.data["reasons"]}
    assert reasons["motion"]["contribution"] > 0.2
    assert "cam-2 subject moving" in reasons["motion"]["text"] and "body-lengths/s" in reasons["motion"]["text"]
    assert reasons["gain"]["value"] >= load_policy().rules.min_gain
    assert reasons["timing"]["clock"] == "beat"
    assert math.isclose(p.data["score"], sum(r["contribution"] for r in p.data["reasons"] if "contribution" in r), abs_tol=1e-3)


def test_lead_beats_two_lands_on_the_second_beat():
    s = Scenario(config=load_policy().with_rules(lead_beats=2))
    s.run(0, 6, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    assert on_beat(p.data["cut_at"])
    lead = p.data["cut_at"] - p.at
    assert 0.25 + BEAT_S <= lead < 0.25 + 2 * BEAT_S


def test_downbeats_are_preferred_when_known():
    s = Scenario(beats=grid(downbeat_every=4))
    s.run(0, 6, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    k = round((p.data["cut_at"] - T0) / BEAT_S)
    assert k % 4 == 0
    assert {r["feature"]: r for r in p.data["reasons"]}["timing"]["downbeat"] is True


def test_no_proposal_before_the_minimum_shot():
    s = Scenario()
    s.run(0, 1.9, moving={"cam-2"})
    assert s.of("ghost.proposed") == []
    s.run(1.9, 3, moving={"cam-2"})
    assert s.of("ghost.proposed")[0].at >= T0 + 2.0


def test_maximum_shot_forces_a_proposal():
    s = Scenario()
    s.run(0, 11.9)
    assert s.of("ghost.proposed") == []  # nobody moves: no gain, no proposal
    s.run(11.9, 12.5)
    props = s.of("ghost.proposed")
    assert len(props) == 1
    assert props[0].at == pytest.approx(T0 + 12.0, abs=1 / 30 + 1e-6)
    forced = [r for r in props[0].data["reasons"] if r["feature"] == "forced"]
    assert forced and "past max_shot 12.0 s" in forced[0]["text"]
    assert props[0].data["to"] != "cam-1"


# -------------------------------------------------------------------------------- supervision


def test_autopilot_executes_at_cut_at():
    s = Scenario(mode="autopilot")
    s.run(0, 8, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    cuts = s.of("cut")
    assert len(cuts) == 1
    assert cuts[0].at == p.data["cut_at"]
    assert cuts[0].data == {"to": "cam-2", "from": "cam-1", "by": "ghost", "proposal": p.data["proposal"]}
    acc = s.of("ghost.accepted")
    assert [(a.data["by"], a.at) for a in acc] == [("autopilot", p.data["cut_at"])]
    assert s.policy.program == "cam-2"
    # the server's director.cut for our own proposal changes nothing more
    s.feed("director.cut", {"from": "cam-1", "to": "cam-2", "by": "ghost", "proposal": p.data["proposal"]}, cuts[0].at + 0.01)
    assert s.policy.program_since == cuts[0].at


def test_ghost_mode_executes_only_when_accepted():
    s = Scenario(mode="ghost")
    s.run(0, 6, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    s.run(6, 6 + 3, moving={"cam-2"})
    assert s.of("cut") == []  # not accepted: never executed
    expired = s.of("ghost.expired")
    assert expired and expired[0].data["proposal"] == p.data["proposal"]
    assert expired[0].at == p.data["expires_at"]
    assert expired[0].data["reason"] == "unanswered"


def test_ghost_mode_accept_executes_at_cut_at_and_late_accept_at_once():
    s = Scenario(mode="ghost")

    def accept_at_once(policy, out):
        if out.type == "ghost.proposed":
            return policy.accept(out.data["proposal"], out.at, by="operator")
        return None

    s.run(0, 6, moving={"cam-2"}, react=accept_at_once)
    p = s.of("ghost.proposed")[0]
    assert [c.at for c in s.of("cut")] == [p.data["cut_at"]]
    assert s.of("ghost.accepted")[0].data == {"proposal": p.data["proposal"], "by": "operator"}

    late = Scenario(mode="ghost")
    late.run(0, 2.1, moving={"cam-2"})
    lp = late.of("ghost.proposed")[0]
    t_late = lp.data["cut_at"] + 0.3
    outs = late.policy.accept(lp.data["proposal"], t_late, by="operator")
    assert [o.type for o in outs] == ["ghost.accepted", "cut"]
    assert outs[1].at == t_late


def test_manual_mode_shows_proposals_only():
    s = Scenario(mode="manual")

    def accept(policy, out):
        return policy.accept(out.data["proposal"], out.at) if out.type == "ghost.proposed" else None

    s.run(0, 10, moving={"cam-2"}, react=accept)
    assert s.of("ghost.proposed") and s.of("ghost.accepted")
    assert s.of("cut") == []
    assert s.policy.program == "cam-1"


def test_decisions_arriving_from_the_stream_are_applied_but_not_re_emitted():
    s = Scenario(mode="ghost")
    s.run(0, 2.1, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    outs = s.feed("ghost.accepted", {"proposal": p.data["proposal"], "by": "operator"}, p.at + 0.05, src="operator")
    assert [(o.type, o.emit) for o in outs] == [("ghost.accepted", False)]
    s.run(2.1, 3, moving={"cam-2"})
    assert [c.at for c in s.of("cut")] == [p.data["cut_at"]]
    # our own echoes (src ghost) and unknown ids change nothing
    assert s.feed("ghost.vetoed", {"proposal": "nope", "by": "operator"}, T0 + 7.1, src="operator") == []


def test_veto_starts_a_cooldown_for_that_camera():
    s = Scenario(mode="ghost", config=load_policy().with_rules(max_shot_s=60.0))  # no forced proposals
    vetoed = []

    def veto_cam2(policy, out):
        if out.type == "ghost.proposed" and out.data["to"] == "cam-2":
            vetoed.append(out.at)
            return policy.veto(out.data["proposal"], out.at + 0.1)
        return None

    s.run(0, 30, moving={"cam-2"}, react=veto_cam2)
    cooldown = load_policy().rules.veto_cooldown_s
    assert len(vetoed) >= 2
    for a, b in zip(vetoed, vetoed[1:]):
        assert b - a >= cooldown  # never re-proposed inside the cooldown
        assert b - a < cooldown + 0.5  # but again as soon as it ends
    assert s.of("ghost.vetoed")[0].data["by"] == "operator"
    assert s.policy.stats["vetoes"] == len(vetoed)


def test_hold_means_no_proposals_until_release():
    s = Scenario(mode="autopilot")
    s.feed("director.hold", {"camera": "cam-1", "by": "operator"}, T0 + 0.5)
    s.run(0, 15, moving={"cam-2"})  # a burst and even a max shot: nothing while held
    assert s.of("ghost.proposed") == [] and s.of("cut") == []
    assert s.policy.next_deadline() is None
    s.feed("director.release", {"camera": "cam-1", "by": "operator"}, T0 + 15)
    s.run(15, 17, moving={"cam-2"})
    assert s.of("ghost.proposed")[0].data["to"] == "cam-2"


def test_hold_on_while_pending_blocks_execution_and_the_proposal_expires():
    s = Scenario(mode="autopilot")
    s.run(0, 2.1, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    s.feed("director.hold", {"camera": "cam-1"}, p.at + 0.05)
    s.run(2.1, 9, moving={"cam-2"})
    assert s.of("cut") == []
    exp = s.of("ghost.expired")
    assert exp[0].data["reason"] == "hold on" and exp[0].at == p.data["expires_at"]


def test_expiry_cools_the_camera_down_briefly():
    s = Scenario(mode="ghost")
    s.run(0, 12, moving={"cam-2"})
    props = s.of("ghost.proposed")
    exps = s.of("ghost.expired")
    assert len(props) >= 2
    assert props[1].at >= exps[0].at + load_policy().rules.expiry_cooldown_s - 1e-9


# -------------------------------------------------------------------------------- cameras


def test_a_camera_placed_10_degrees_from_program_is_not_proposed():
    placements = {"cam-1": 0.0, "cam-2": 10.0, "cam-3": 120.0}
    s = Scenario(placements=placements, mode="autopilot")
    s.run(0, 12.5, moving={"cam-2"})
    assert all(p.data["to"] != "cam-2" for p in s.of("ghost.proposed"))
    # control: with a narrower jump-cut angle the same burst is proposed
    c = Scenario(placements=placements, config=load_policy().with_rules(jump_cut_deg=5.0))
    c.run(0, 6, moving={"cam-2"})
    assert c.of("ghost.proposed")[0].data["to"] == "cam-2"


def test_azimuths_wrap_around_for_the_jump_cut_rule():
    s = Scenario(placements={"cam-1": 355.0, "cam-2": -5.0, "cam-3": 120.0})
    s.run(0, 6, moving={"cam-2"})
    assert all(p.data["to"] != "cam-2" for p in s.of("ghost.proposed"))


def test_a_lost_camera_is_never_proposed_and_a_lost_program_forces_a_proposal():
    s = Scenario(mode="autopilot")
    s.feed("camera.left", {"camera": "cam-2", "reason": "timeout"}, T0 + 0.1)
    s.run(0, 6, moving={"cam-2"})
    assert all(p.data["to"] != "cam-2" for p in s.of("ghost.proposed"))
    s.feed("camera.left", {"camera": "cam-1", "reason": "timeout"}, T0 + 6.0)
    s.run(6, 7, cams=["cam-3"])
    p = s.of("ghost.proposed")[-1]
    assert p.data["to"] == "cam-3"
    assert any("program camera cam-1 lost" in r["text"] for r in p.data["reasons"] if r["feature"] == "forced")


def test_a_proposal_whose_camera_is_lost_before_cut_at_expires():
    s = Scenario(mode="autopilot")
    s.run(0, 2.1, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    s.feed("camera.left", {"camera": "cam-2"}, p.at + 0.1)
    s.run(2.2, 6, cams=["cam-1", "cam-3"])
    assert s.of("cut") == []
    assert s.of("ghost.expired")[0].data["reason"] == "camera cam-2 lost"


def test_an_operator_cut_supersedes_the_pending_proposal():
    s = Scenario(mode="ghost")
    s.run(0, 2.05, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    outs = s.feed("director.cut", {"from": "cam-1", "to": "cam-3", "by": "operator"}, p.at + 0.1)
    assert outs[0].type == "ghost.expired" and "superseded" in outs[0].data["reason"]
    assert s.policy.program == "cam-3" and s.policy.program_since == p.at + 0.1


# -------------------------------------------------------------------------------- music


def test_without_music_it_proposes_on_its_own_clock_and_says_so():
    s = Scenario(cue=None)
    s.run(0, 6, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    timing = {r["feature"]: r for r in p.data["reasons"]}["timing"]
    assert timing["clock"] == "own" and "no music playing" in timing["text"]
    period = load_policy().rules.clock_period_s
    assert (p.data["cut_at"] / period) == pytest.approx(round(p.data["cut_at"] / period), abs=1e-6)


def test_a_cue_for_a_track_without_features_falls_back_to_own_clock_and_says_so(tmp_path):
    beat_grid_npz(tmp_path / "other-bbbbbbbbbbbb.npz", track=TRACK)
    policy = Policy(load_policy(), beats=BeatLibrary(tmp_path), follow_mode=False)
    make = EventFactory()
    for cam, az in PLACEMENTS.items():
        policy.feed(make("camera.joined", {"camera": cam, "placement": {"azimuth_deg": az}}, T0 - 1))
    policy.feed(make("director.cut", {"to": "cam-1"}, T0))
    notes = policy.feed(make("music.cue", {"track": NO_FEATURES_TRACK, "started_at": T0}, T0))
    assert notes[0].type == "note"
    assert notes[0].data["message"] == f"track cccccccccccc: no feature artifact for track cccccccccccc in {tmp_path}: proposing on own clock"
    props = []
    for k in range(round(6 * 30)):
        t = T0 + k / 30
        for cam in PLACEMENTS:
            out = policy.feed(make("pose.sample", {"camera": cam, "t": t, "joints": pose_joints(t, motion=float(cam == "cam-2"))}, t))
            props += [o for o in out if o.type == "ghost.proposed"]
    timing = {r["feature"]: r for r in props[0].data["reasons"]}["timing"]
    assert timing["clock"] == "own"
    assert "no feature artifact for track cccccccccccc" in timing["text"]
    # the track that has features is found in the same directory
    policy.feed(make("music.cue", {"track": TRACK, "started_at": T0}, T0 + 6))
    assert policy.cue.grid is not None and len(policy.cue.grid.beat_times) > 100


def test_after_the_last_beat_it_falls_back_to_own_clock():
    s = Scenario(beats=grid(n=4))  # beats until T0 + 1.5 s
    s.run(0, 6, moving={"cam-2"})
    timing = {r["feature"]: r for r in s.of("ghost.proposed")[0].data["reasons"]}["timing"]
    assert timing["clock"] == "own" and "past the last beat" in timing["text"]


def test_cue_offset_shifts_the_grid():
    s = Scenario(cue=None)
    s.feed("music.cue", {"track": TRACK, "started_at": T0, "offset_s": 0.2}, T0)
    s.run(0, 6, moving={"cam-2"})
    p = s.of("ghost.proposed")[0]
    k = (p.data["cut_at"] - (T0 - 0.2)) / BEAT_S  # wall = started_at + beat - offset_s
    assert k == pytest.approx(round(k), abs=1e-6)


# -------------------------------------------------------------------------------- bad input


def test_nan_and_out_of_range_joints_are_dropped_and_counted():
    joints = pose_joints(0.0)
    joints["nose"] = [float("nan"), 0.3, 0.9]
    joints["neck"] = [0.5, 1.7, 0.9]
    joints["root"] = [-3.0, 0.5, 0.9]
    joints["leftEye"] = [0.5, 0.5, 1.5]
    joints["rightEye"] = [0.5, float("inf"), 0.9]
    joints["leftEar"] = ["x", 0.5, 0.9]
    joints["rightEar"] = [True, 0.5, 0.9]
    joints["leftHip"] = [0.5, 0.5]
    joints["unknownJoint"] = [0.5, 0.5, 0.9]
    good, dropped = clean_joints(joints, SignalParams())
    assert dropped == 8
    assert len(good) == len(JOINT_NAMES) - 8
    sig = CameraSignals()
    assert sig.add(T0, joints)
    assert sig.dropped_joints == 8
    assert sig.at(T0).presence == pytest.approx((len(JOINT_NAMES) - 8) / len(JOINT_NAMES))
    assert clean_joints(None, SignalParams()) == ({}, 0)
    assert clean_joints("garbage", SignalParams()) == ({}, 0)


def test_a_stream_of_broken_poses_never_yields_a_proposal_to_that_camera():
    s = Scenario(mode="autopilot")

    def broken(t):
        return {name: [float("nan"), 2.0, 0.9] for name in JOINT_NAMES}

    for k in range(6 * 30):
        t = T0 + k / 30
        s.feed("pose.sample", {"camera": "cam-2", "t": t, "joints": broken(t)}, t)
        s.feed("pose.sample", {"camera": "cam-2", "t": float("nan"), "joints": None}, t)
        s.feed("pose.sample", {"camera": "cam-1", "t": t, "joints": pose_joints(t)}, t)
    assert all(p.data["to"] != "cam-2" for p in s.of("ghost.proposed"))
    cam2 = s.policy.cameras["cam-2"].signals
    assert cam2.dropped_joints == 6 * 30 * len(JOINT_NAMES)
    assert cam2.out_of_order >= 6 * 30  # the NaN times
    assert s.policy.now == T0 + (6 * 30 - 1) / 30


def test_a_line_with_nan_is_reported_by_the_envelope_reader():
    line = '{"v":1,"id":"x","ts":1,"type":"pose.sample","data":{"camera":"cam-1","t":NaN,"joints":null}}'
    with pytest.raises(EventError, match="line 7: not JSON"):
        decode(line, line_no=7)


def test_events_out_of_order_do_not_move_the_clock_back():
    s = Scenario(mode="autopilot")
    # pose samples of each 1/6 s arrive in reverse order; one director.cut arrives late
    fps = 30
    batch = []
    for k in range(round(8 * fps)):
        t = T0 + k / fps
        for cam in sorted(PLACEMENTS):
            batch.append((t, cam))
        if len(batch) >= 15:
            for t_, cam in reversed(batch):
                s.feed("pose.sample", {"camera": cam, "t": t_, "joints": pose_joints(t_, motion=float(cam == "cam-2"))}, t_)
            batch = []
    assert s.policy.stats["events_out_of_order"] > 0
    assert sum(c.signals.out_of_order for c in s.policy.cameras.values()) > 0
    cut = s.of("cut")[0]
    assert cut.data["to"] == "cam-2" and on_beat(cut.at)
    times = [o.at for o in s.outputs if o.type != "note"]
    assert times == sorted(times)  # outputs never go back in time
    before = s.policy.now
    s.feed("director.cut", {"from": "cam-2", "to": "cam-3", "by": "operator"}, T0 + 1.0)  # late, stale ts
    assert s.policy.now == before and s.policy.program == "cam-3" and s.policy.program_since == before


def test_same_inputs_give_the_same_outputs():
    runs = []
    for _ in range(2):
        s = Scenario(mode="autopilot")
        s.run(0, 30, moving=lambda t: {"cam-2"} if (t - T0) % 10 < 5 else {"cam-3"})
        runs.append([(o.type, o.at, repr(o.data)) for o in s.outputs])
    assert runs[0] == runs[1]
    assert len([r for r in runs[0] if r[0] == "cut"]) >= 3


# -------------------------------------------------------------------------------- policy file


def test_the_shipped_policy_file_matches_the_documented_defaults():
    assert load_policy() == PolicyConfig()
    text = default_policy_text()
    for table, values in PolicyConfig().as_dict().items():
        assert f"[{table}]" in text
        for key in values:
            assert f"\n{key} = " in text, key


def test_policy_file_overrides_and_errors(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[rules]\nmin_shot_s = 3\nlead_beats = 2\n[weights]\nmotion = 0.9\n")
    c = load_policy(f)
    assert c.rules.min_shot_s == 3.0 and c.rules.lead_beats == 2 and c.weights.motion == 0.9
    assert c.rules.max_shot_s == Rules().max_shot_s
    with pytest.raises(DataError, match=r"unknown key rules\.min_shot"):
        parse_policy("[rules]\nmin_shot = 3\n")
    with pytest.raises(DataError, match=r"unknown table \[rule\]"):
        parse_policy("[rule]\nmin_shot_s = 3\n")
    with pytest.raises(DataError, match=r"rules\.lead_beats must be an integer"):
        parse_policy("[rules]\nlead_beats = 1.5\n")
    with pytest.raises(DataError, match=r"weights\.motion must be a number"):
        parse_policy('[weights]\nmotion = "high"\n')
    with pytest.raises(DataError, match="max_shot_s must be greater than rules.min_shot_s"):
        parse_policy("[rules]\nmax_shot_s = 1\n")
    with pytest.raises(DataError, match="not valid TOML"):
        parse_policy("[rules\n")
    with pytest.raises(InputMissingError, match="no such policy file"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(DataError, match="unknown mode"):
        Policy(mode="chaos")


def test_feature_artifact_reader(tmp_path):
    path = tmp_path / "song-bbbbbbbbbbbb.npz"
    beat_grid_npz(path, track=TRACK, bpm=90, duration_s=20, beats_per_bar=4)
    g = read_beat_grid(path)
    assert g.track == TRACK and g.tempo_bpm == 90 and g.duration_s == 20
    assert g.beat_times[:3] == pytest.approx((0.0, 60 / 90, 120 / 90))
    assert len(g.downbeats) == math.ceil(len(g.beat_times) / 4)
    (tmp_path / "bad-dddddddddddd.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        read_beat_grid(tmp_path / "bad-dddddddddddd.npz")
    lib = BeatLibrary(tmp_path)
    assert lib.get(TRACK).beat_times == g.beat_times
    assert lib.get("d" * 64) is None and "no feature artifact" in lib.errors["d" * 64]


def test_joint_speed_over_the_joints_seen_in_both_samples():
    """Speed = mean displacement of the joints seen (confidence >= 0.5) in both samples, per
    second, in body sizes (bounding-box diagonal of the joints seen now); the same whether
    every joint is seen (the C-level path) or only some are."""
    base = pose_joints(0.0)
    moved = {name: [x + 0.01, y, c] for name, (x, y, c) in base.items()}
    full_a, full_b = CameraSignals(), CameraSignals()
    for sig in (full_a, full_b):
        sig.add(T0, base)
    full_a.add(T0 + 0.1, moved)
    full_b.add(T0 + 0.1, CheckedJoints(tuple(map(tuple, (moved[n] for n in JOINT_NAMES)))))
    xs = [v[0] for v in moved.values()]
    ys = [v[1] for v in moved.values()]
    body = math.hypot(max(xs) - min(xs), max(ys) - min(ys))
    dt = (T0 + 0.1) - T0  # not quite 0.1 at Unix times
    assert full_a.at(T0 + 0.1).speed_bps == pytest.approx(0.01 / dt / body, rel=1e-9)
    assert full_a.at(T0 + 0.1) == full_b.at(T0 + 0.1)
    # some joints unseen: nose not confident before, a wrist missing now, an ankle not confident now
    before = {**base, "nose": [0.5, 0.2, 0.3]}
    now = {name: [x + (0.02 if name.startswith("left") else 0.0), y, c] for name, (x, y, c) in base.items()}
    del now["rightWrist"]
    now["leftAnkle"] = [now["leftAnkle"][0], now["leftAnkle"][1], 0.1]
    part = CameraSignals()
    part.add(T0, before)
    part.add(T0 + 0.1, now)
    both = [n for n in JOINT_NAMES if n not in ("nose", "rightWrist", "leftAnkle")]
    seen_now = [v for n, v in now.items() if v[2] >= 0.5]
    body = math.hypot(max(v[0] for v in seen_now) - min(v[0] for v in seen_now),
                      max(v[1] for v in seen_now) - min(v[1] for v in seen_now))  # fmt: skip
    mean_moved = sum(0.02 if n.startswith("left") else 0.0 for n in both) / len(both)
    sig = part.at(T0 + 0.1)
    assert sig.speed_bps == pytest.approx(mean_moved / dt / body, rel=1e-9)
    assert sig.presence == pytest.approx(len(seen_now) / len(JOINT_NAMES))
