"""The event envelope: vocabulary round trips, validation, the lazy JSON Lines reader."""

from __future__ import annotations

import io
import subprocess
import sys

import orjson
import pytest

from mmx.errors import EventError
from mmx.events import (
    JOINT_NAMES,
    VOCABULARY,
    Event,
    EventWriter,
    Producer,
    decode,
    encode,
    from_dict,
    new_id,
    read_events,
)

#: One valid data example per type of DESIGN.md's vocabulary.
EXAMPLES = {
    "session.started": {"kind": "photoshoot_performance", "title": "Look 1", "notes": "", "mode": "manual"},
    "session.ended": {"reason": "operator", "state": {"program": "cam-1"}},
    "camera.joined": {"camera": "cam-1", "device": "dev-a", "name": "iPhone A", "model": "iPhone15,3",
                      "role": "hero", "facing": "back", "zoom": 1, "lenses": [0.5, 1, 2, 3],
                      "placement": {"label": "front", "azimuth_deg": 0, "distance_m": 3.5}},
    "camera.left": {"camera": "cam-1", "reason": "timeout"},
    "camera.changed": {"camera": "cam-1", "zoom": 0.5},
    "camera.command": {"camera": "cam-1", "command_id": "c1", "command": "zoom", "args": {"zoom": 0.5}},
    "camera.ack": {"camera": "cam-1", "command_id": "c1", "ok": True, "error": None, "latency_ms": 3.2},
    "director.cut": {"from": "cam-2", "to": "cam-3", "by": "ghost", "proposal": "01JD3K"},
    "director.hold": {"camera": "cam-3", "by": "operator"},
    "director.release": {"camera": "cam-3", "by": "operator"},
    "director.mode": {"mode": "autopilot", "previous": "manual"},
    "still.captured": {"still": "s1", "camera": "cam-1", "path": "stills/cam-1/s1.jpg",
                       "sha256": "ab" * 32, "bytes": 1234, "width": 640, "height": 360},
    "still.marker": {"label": "jump", "camera": "cam-2"},
    "ghost.proposed": {"proposal": "p1", "from": "cam-1", "to": "cam-2", "score": 0.8,
                       "reasons": [{"feature": "motion", "value": 0.5}], "cut_at": 1.5, "expires_at": 2.0},
    "ghost.accepted": {"proposal": "p1", "by": "operator"},
    "ghost.vetoed": {"proposal": "p1", "by": "operator"},
    "ghost.expired": {"proposal": "p1"},
    "pose.sample": {"camera": "cam-1", "t": 1795264000.1,
                    "joints": {name: [0.5, 0.5, 0.9] for name in JOINT_NAMES}},
    "music.cue": {"track": "cd" * 32, "title": "intro", "path": "intro.ogg", "started_at": 1795264000.0, "offset_s": 0.0},
    "ghost.held": {"camera": "cam-1", "reasons": [{"rule": "max_shot", "text": "no other camera sees the subject"}]},
    "recording.started": {"camera": "cam-1", "path": "video/cam-1.mkv", "codec": "vp8", "kind": "iso",
                          "started_at": 1795264000.0},
    "recording.stopped": {"camera": "program", "path": "video/program.mkv", "codec": "vp8", "kind": "program",
                          "bytes": 123456, "duration_s": 20.5, "frames": 615, "dropped": 0, "sha256": "ef" * 32,
                          "reason": "session"},
    "recording.armed": {"take": "01JD3K0000TAKE00000000000", "session": "01JD3J", "path": "/data/sessions/01JD3J/video",
                        "dir": "sessions/01JD3J/video", "origin_ts": 1795264000.0, "reason": "session"},
    "recording.disarmed": {"take": "01JD3K0000TAKE00000000000", "reason": "disk_full"},
    "recording.disk_low": {"free_bytes": 1 << 30, "rate_bytes_s": 2.5e6, "minutes_left": 7.2},
    "relay.stalled": {"camera": "cam-2"},
    "relay.resumed": {"camera": "cam-2"},
}


def test_examples_cover_the_vocabulary():
    assert set(EXAMPLES) == set(VOCABULARY)
    assert len(JOINT_NAMES) == 19


@pytest.mark.parametrize("etype", sorted(EXAMPLES))
def test_every_type_round_trips(etype):
    producer = Producer("serve", session="S1")
    event = producer.make(etype, EXAMPLES[etype])
    line = encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = decode(line)
    assert back.to_dict() == event.to_dict()
    assert encode(back) == line


def test_unknown_type_and_fields_pass_through_untouched():
    line = b'{"v":1,"id":"x-1","seq":3,"ts":1795264001.5,"type":"lights.dimmed","src":"dmx","data":{"level":0.3},"extra":[1]}'
    event = decode(line)
    assert event.type == "lights.dimmed"
    assert encode(event) == line + b"\n"


def test_producer_numbers_seq_and_makes_unique_ulids():
    producer = Producer("ghost", start_seq=41)
    events = [producer.make("ghost.expired", {"proposal": "p"}) for _ in range(100)]
    assert [e.seq for e in events] == list(range(42, 142))
    assert len({e.id for e in events}) == 100
    assert all(len(e.id) == 26 for e in events)
    assert new_id() != new_id()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got an array"),
        (b'{"id":"a","ts":1795264001}', "missing field 'type'"),
        (b'{"id":"a","ts":1795264001,"type":""}', "field 'type' must be a non-empty string"),
        (b'{"ts":1795264001,"type":"x"}', "missing field 'id'"),
        (b'{"id":"' + b"a" * 129 + b'","ts":1795264001,"type":"x"}', "field 'id' must be a string of 1 to 128 characters"),
        (b'{"id":"a","type":"x"}', "missing field 'ts'"),
        (b'{"id":"a","ts":"now","type":"x"}', "field 'ts' must be a finite number"),
        (b'{"id":"a","ts":1795264001,"type":"x","seq":"7"}', "field 'seq' must be a whole number, got a string"),
        (b'{"id":"a","ts":1795264001,"type":"x","data":[]}', "field 'data' must be an object, got an array"),
        (b'{"id":"a","ts":1795264001,"type":"director.cut","data":{"to":3}}', "director.cut: data field 'to' must be a string, got a number"),
        (b'{"id":"a","ts":1795264001,"type":"director.cut","data":{}}', "director.cut: missing data field 'to'"),
        (b'{"id":"a","ts":1795264001,"type":"camera.ack","data":{"camera":"c","command_id":"x","ok":1}}', "data field 'ok' must be a boolean"),
        (b'{"id":"a","ts":1795264001,"type":"camera.changed","data":{"camera":"c","placement":{"azimuth_deg":"left"}}}', "placement field 'azimuth_deg' must be a number"),
        (b'{"id":"a","ts":1795264001,"type":"x"}\xff', "not JSON: not valid UTF-8"),
    ],
)
def test_bad_lines_are_reported_with_their_reason(line, reason):
    with pytest.raises(EventError) as info:
        decode(line, line_no=7)
    assert info.value.line == 7
    assert info.value.message.startswith("line 7: ")
    assert reason in info.value.message


def test_reader_reports_line_numbers_and_goes_on():
    good = [encode(Producer("t").make("still.marker", {"label": str(i)})) for i in range(3)]
    stream = io.BytesIO(
        good[0] + b"\n" + b"   \r\n" + b"{broken\r\n" + good[1].replace(b"\n", b"\r\n") + b"[]\n"
        + b"x" * 5000 + b"\n" + good[2].rstrip(b"\n")  # last line without a line end
    )
    errors: list[EventError] = []
    events = list(read_events(stream, on_error=errors.append, max_line_bytes=4096))
    assert [e.data["label"] for e in events] == ["0", "1", "2"]
    assert [(e.line, e.reason.split(":")[0]) for e in errors] == [
        (4, "not JSON"), (6, "expected a JSON object, got an array"), (7, "line longer than 4096 bytes"),
    ]


def test_reader_without_handler_raises_at_first_bad_line():
    with pytest.raises(EventError, match="line 2: not JSON"):
        list(read_events(io.BytesIO(encode(Event("x", src="t")) + b"oops\n")))


def test_reader_is_lazy_on_a_real_pipe():
    """One line written and flushed into a pipe is decoded before the writer closes it."""
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom mmx.events import read_events\n"
         "for e in read_events(sys.stdin.buffer):\n    print(e.type, flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        proc.stdin.write(encode(Event("first", src="t")))
        proc.stdin.flush()
        assert proc.stdout.readline() == b"first\n"
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def test_writer_flushes_every_record():
    class Recorder(io.BytesIO):
        flushes = 0

        def flush(self):
            self.flushes += 1

    fp = Recorder()
    writer = EventWriter(fp)
    assert writer.write_all(Event("a", src="t") for _ in range(3)) == 3
    assert fp.flushes == 3
    assert len(fp.getvalue().splitlines()) == 3


def test_from_dict_defaults():
    event = from_dict({"id": "u-1", "ts": 1795264002, "type": "x"})
    assert (event.data, event.seq, event.session, event.src, event.v) == ({}, None, None, "", 1)
    assert orjson.loads(event.encode())["type"] == "x"


# -- the validation contract (issue 17) -------------------------------------------------------

from mmx.events import (  # noqa: E402
    MAX_DEPTH,
    MAX_LINE_BYTES,
    MAX_NAME_LENGTH,
    MAX_STRING_LENGTH,
    TS_MAX,
    TS_MIN,
    certainly_valid,
    check_event,
    validate,
)


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _line(**fields) -> bytes:
    return orjson.dumps({"v": 1, "id": "c-1", "ts": 1795264000.5, "type": "x", **fields})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (_line(ts=1e20), "field 'ts' must be Unix seconds from 946684800 to 4102444800 (years 2000 to 2100), got 1e+20"),
        (_line(ts=1e308), "got 1e+308"),
        (_line(ts=-1e308), "got -1e+308"),
        (_line(ts=TS_MIN - 1), "field 'ts' must be Unix seconds from"),
        (_line(ts=TS_MAX + 1), "field 'ts' must be Unix seconds from"),
        (b'{"id":"d","ts":1795264000,"type":"x","data":{"deep":' + b"[" * 300 + b"]" * 300 + b"}}",
         f"nested deeper than {MAX_DEPTH} levels"),
        (_line(data={"deep": _nested(MAX_DEPTH - 1)}), f"nested deeper than {MAX_DEPTH} levels"),
        (_line(extra=_nested(MAX_DEPTH)), f"nested deeper than {MAX_DEPTH} levels"),
        (_line(data={"name": "n" * (MAX_STRING_LENGTH + 1)}), f"data.name: string longer than {MAX_STRING_LENGTH} characters"),
        (_line(data={"k" * (MAX_STRING_LENGTH + 1): 1}), "object key longer than"),
        (_line(type="t" * (MAX_NAME_LENGTH + 1)), f"field 'type' is longer than {MAX_NAME_LENGTH} characters"),
        (_line(session="s" * (MAX_NAME_LENGTH + 1)), f"field 'session' is longer than {MAX_NAME_LENGTH} characters"),
        (_line(src="s" * (MAX_NAME_LENGTH + 1)), f"field 'src' is longer than {MAX_NAME_LENGTH} characters"),
        (_line(data={"bytes": 1 << 63}), "data.bytes: integer beyond 64 bits"),
        (_line(seq=(1 << 64) - 1), "field 'seq': integer beyond 64 bits"),
        (_line(type="camera.joined", session="S"), "camera.joined: missing data field 'camera'"),
        (_line(type="camera.changed", session="S"), "camera.changed: missing data field 'camera'"),
        (_line(type="camera.left", session="S"), "camera.left: missing data field 'camera'"),
        (_line(type="director.cut"), "director.cut: missing data field 'to'"),
        (b'{"v":1,"id":"x","ts":1795264000,"type":"x","data":{"s":"' + b"a" * MAX_LINE_BYTES + b'"}}',
         f"line longer than {MAX_LINE_BYTES} bytes"),
    ],
)
def test_the_validation_contract_names_the_limit_broken(line, reason):
    with pytest.raises(EventError) as info:
        decode(line, line_no=3)
    assert info.value.message.startswith("line 3: ")
    assert reason in info.value.message
    if len(line) <= MAX_LINE_BYTES:
        assert not certainly_valid(orjson.loads(line), line)
        with pytest.raises(EventError):
            validate(orjson.loads(line))


def test_the_contract_accepts_what_is_just_within_its_limits():
    for line in (
        _line(ts=TS_MIN), _line(ts=TS_MAX), _line(data={"deep": _nested(MAX_DEPTH - 2)}),
        _line(data={"name": "n" * MAX_STRING_LENGTH}), _line(data={"bytes": (1 << 63) - 1, "neg": -((1 << 63) - 1)}),
        _line(type="director.cut", data={"to": None}), _line(type="t" * MAX_NAME_LENGTH),
    ):  # fmt: skip
        assert decode(line).raw == line


def test_check_event_checks_what_a_producer_built_before_it_goes_on():
    good = Producer("serve", session="S").make("camera.joined", {"camera": "cam-1", "name": "iPhone"})
    assert check_event(good) == good.encode()
    with pytest.raises(EventError, match=f"data.name: string longer than {MAX_STRING_LENGTH} characters"):
        check_event(Producer("serve").make("camera.joined", {"camera": "cam-1", "name": "n" * 1_200_000}))
    with pytest.raises(EventError, match=f"event longer than {MAX_LINE_BYTES} bytes encoded"):
        check_event(Producer("serve").make("x", {f"k{i}": "v" * 60_000 for i in range(20)}))
    with pytest.raises(EventError, match="field 'ts' must be Unix seconds"):
        check_event(Event("x", ts=1e20))
    with pytest.raises(EventError, match="nested deeper than 32 levels"):
        check_event(Event("x", data={"d": _nested(40)}))


def test_issue18_a_three_digit_exponent_or_an_e_in_a_hex_id_stays_on_the_fast_path() -> None:
    """A number with a 3-digit exponent (or an id like ``…3e456…``) cannot break a limit: orjson
    refuses what overflows a double, so such lines are accepted without the walk, as decode
    accepts them; an integer of 19 digits still takes the walk, and 1e400 is refused."""
    from mmx.events import certainly_valid

    for raw in (_line(id="9b2e4567-e89b-42d3-a456-3e4561740000"), _line(data={"x": 1e300, "y": -2.5e-300}),
                b'{"v":1,"id":"a","ts":1.7e9,"type":"x","data":{"z":1E+123}}'):  # fmt: skip
        assert certainly_valid(orjson.loads(raw), raw), raw
        decode(raw)  # and decode agrees
    big = _line(data={"n": 10**19})
    assert not certainly_valid(orjson.loads(big), big)
    with pytest.raises(EventError, match="beyond 64 bits"):
        decode(big)
    with pytest.raises(EventError):
        decode(b'{"v":1,"id":"a","ts":1.7e9,"type":"x","data":{"z":1e400}}')


def test_the_fast_walk_test_answers_as_its_regular_expression() -> None:
    """`_needs_walk` is `_NEEDS_WALK.search` in C substring searches (issue 18): same answer."""
    import random

    from mmx.contract import _NEEDS_WALK, _needs_walk

    rng = random.Random(3)
    alphabet = b"0123456789eE+-.x\\" + b'"{}[],: '
    cases = [b"1" * 19, b"1" * 18, b"1e308", b"1E-308", b"1e+30", b"2e+300", b"e12", b"E-12x", b"9" * 18 + b"x9",
             b'{"ts":1e20}', b'{"ts":1.5e-3}', b"-1e-999", b"e+12", b"E+123"]  # fmt: skip
    cases += [bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(20000)]
    for raw in cases:
        assert _needs_walk(raw) == (_NEEDS_WALK.search(raw) is not None), raw
