"""Issue 17, serve's side: each fault found by probing, with a regression test named after it.

A real `mmx serve` (`ServerThread`) on loopback; what it lets out is checked against the
ledger's own door (`mmx.events.decode`): no line it publishes may be one the ledger refuses.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time

import aiohttp
import orjson
import pytest

from mmx.events import MAX_LINE_BYTES, decode, new_id

from .conftest import MMX, free_port
from .test_serve import AUTH, TOKEN, RawDevice, call, events, jpeg, run, srv, upload  # noqa: F401 - srv is a fixture


async def raw_http(port: int, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send ``request`` (bytes as given, e.g. a non-UTF-8 header) and read the answer: (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def published_lines(http, srv) -> list[bytes]:
    async with http.get(srv.url + "/v1/events", params={"since": "0", "follow": "0", "types": "*,pose.*"},
                        headers=AUTH) as resp:  # fmt: skip
        assert resp.status == 200
        return [line for line in (await resp.read()).splitlines() if line]


def assert_ledger_takes_every_line(lines: list[bytes]) -> None:
    """Every published line fits the ledger's limit and passes its decoder."""
    for line in lines:
        assert len(line) <= MAX_LINE_BYTES
        decode(line)


# -- item 3 (serve's part): POST /v1/events refuses ts outside 2000-2100 ---------------------


def test_item3_posted_event_with_ts_1e20_is_422(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            for ts in (1e20, 1e308, -1e308, 0):
                status, err = await call(http, srv, "POST", "/v1/events",
                                         {"id": new_id(), "type": "still.marker", "ts": ts, "data": {"label": "x"}})  # fmt: skip
                assert status == 422, err
                assert err["error"].startswith("field 'ts' must be Unix seconds from 946684800 to 4102444800")
            deep: dict = {}
            for _ in range(300):
                deep = {"d": deep}
            status, err = await call(http, srv, "POST", "/v1/events", {"type": "lighting.scene", "data": deep})
            assert (status, err["error"]) == (422, "nested deeper than 32 levels")
            ok = {"id": new_id(), "type": "still.marker", "ts": time.time(), "data": {"label": "fine"}}
            assert (await call(http, srv, "POST", "/v1/events", ok))[0] == 202
            lines = await published_lines(http, srv)
            assert [orjson.loads(line)["type"] for line in lines] == ["still.marker"]
            assert_ledger_takes_every_line(lines)

    run(main())


# -- item 4: nothing serve accepts becomes a line over the ledger's limit -------------------


def test_item4_a_1_mib_body_and_a_1_2_mb_hello_name_are_refused_at_the_door(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            # just under 1 MiB as posted: the seq, session and src the server adds push it over
            chunk = "x" * 60_000
            body = {"id": new_id(), "ts": time.time(), "type": "lighting.scene",
                    "data": {f"k{i}": chunk for i in range(17)}}  # fmt: skip
            filler = MAX_LINE_BYTES - 10 - len(orjson.dumps(body))
            body["data"]["pad"] = "y" * filler
            raw = orjson.dumps(body)
            assert MAX_LINE_BYTES - 20 < len(raw) <= MAX_LINE_BYTES
            await call(http, srv, "POST", "/v1/session/start", {"title": "t"})
            async with http.post(srv.url + "/v1/events", data=raw, headers=AUTH) as resp:
                assert resp.status == 422
                assert (await resp.json())["error"].startswith(f"event longer than {MAX_LINE_BYTES} bytes encoded")
            # over 1 MiB as posted: refused before it is read whole
            async with http.post(srv.url + "/v1/events", data=raw + b" " * 64, headers=AUTH) as resp:
                assert resp.status == 413
            # a hello with a 1.2 MB name gets a hello error and the socket closed (4400)
            ws = await http.ws_connect(srv.ws_url, headers=AUTH)
            await ws.send_str(orjson.dumps({"t": "hello", "device": "dev-long", "name": "n" * 1_200_000}).decode())
            msg = orjson.loads((await ws.receive(timeout=5)).data)
            assert msg == {"t": "error", "error": "hello: longer than 65536 bytes", "ref": "hello"}
            await ws.receive(timeout=5)
            assert ws.close_code == 4400
            # a name that fits the message but not the hello's own bound
            ws = await http.ws_connect(srv.ws_url, headers=AUTH)
            await ws.send_str(orjson.dumps({"t": "hello", "device": "dev-long", "name": "n" * 5000}).decode())
            msg = orjson.loads((await ws.receive(timeout=5)).data)
            assert msg["error"] == "hello: 'name' is longer than 256 characters"
            # a device's messages after hello are bounded too
            dev = await RawDevice(srv, http, "dev-ok").connect()
            await dev.send({"t": "state", "facing": "f" * 100_000})
            await dev.send({"t": "pose", "ts": time.time(), "joints": {"nose": ["x" * 60_000, 0, 1]}})
            errors = await dev.wait_for("error", 2)
            assert [e["error"] for e in errors] == ["line: state: 'facing' is longer than 256 characters",
                                                    "line: pose: joint 'nose' must be [x, y, confidence] (numbers) or null"]
            status, _ = await call(http, srv, "POST", "/v1/session/stop", {})
            assert status == 200
            state = (await call(http, srv, "GET", "/v1/state"))[1]
            assert [c["camera"] for c in state["cameras"]] == [dev.camera]
            lines = await published_lines(http, srv)
            assert_ledger_takes_every_line(lines)
            capture = srv.config.data_dir / "sessions"
            for path in capture.glob("*/events.jsonl"):
                assert_ledger_takes_every_line(path.read_bytes().splitlines())

    run(main())


# -- item 5: lenses that are not arrays of zoom factors ------------------------------------


@pytest.mark.parametrize("back", [5, "wide", [1, "2"], [0], [1, True]])
def test_item5_hello_with_bad_lenses_is_refused_with_the_field_named(srv, back):
    async def main():
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(srv.ws_url, headers=AUTH)
            hello = {"t": "hello", "device": "dev-lens", "capabilities": {"lenses": {"back": back, "front": [1]}}}
            await ws.send_str(orjson.dumps(hello).decode())
            msg = orjson.loads((await ws.receive(timeout=5)).data)
            assert msg["t"] == "error" and msg["error"].startswith("hello: capabilities.lenses.back must ")
            await ws.receive(timeout=5)
            assert ws.close_code == 4400
            assert (await call(http, srv, "GET", "/v1/cameras"))[1] == []

    run(main())


def test_item5_null_lenses_are_normalised_and_zoom_never_answers_500(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = RawDevice(srv, http, "dev-null-lens", lenses={"back": None, "front": [1, 2]})
            await dev.connect()
            status, cam = await call(http, srv, "GET", f"/v1/cameras/{dev.camera}")
            assert status == 200 and cam["lenses"] == {"front": [1, 2]}
            for zoom in (0.5, 1, 2, 5, "two", None, True):
                status, body = await call(http, srv, "POST", f"/v1/cameras/{dev.camera}/zoom", {"zoom": zoom})
                assert status == 422, (zoom, body)  # the back facing reports no lens at all
            assert [ev["type"] for ev in await events(http, srv, types="camera.command")] == []

    run(main())


# -- item 6: still uploads -----------------------------------------------------------------


def test_item6_broken_still_uploads_are_400_and_non_jpeg_bytes_415(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-stills").connect()
            form = aiohttp.FormData()
            form.add_field("camera", "c" * 1024 + "d")
            form.add_field("still", "s1")
            form.add_field("sha256", "0" * 64)
            form.add_field("image", jpeg(), filename="s1.jpg", content_type="image/jpeg")
            async with http.post(srv.url + "/v1/stills", data=form, headers=AUTH) as resp:
                assert (resp.status, (await resp.json())["error"]) == (400, "form field 'camera' is longer than 1024 bytes")
            multipart = {**AUTH, "Content-Type": "multipart/form-data"}
            async with http.post(srv.url + "/v1/stills", data=b"--x\r\n\r\n--x--\r\n", headers=multipart) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"] == ("malformed multipart/form-data body: "
                                                        "boundary missed for Content-Type: multipart/form-data")
            garbage = b"--BB\r\nthis is no header\r\n\r\nvalue\r\n--BB--\r\n"
            headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=BB"}
            async with http.post(srv.url + "/v1/stills", data=garbage, headers=headers) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"].startswith("malformed multipart/form-data body: Invalid HTTP header")
            for image, declared, found in ((b"GIF89a" + bytes(200), "image/jpeg", "neither JPEG nor HEIC"),
                                           (jpeg(), "image/heic", "a JPEG file"),
                                           (b"\x00\x00\x00\x18ftypheic" + bytes(100), "image/jpeg", "a HEIC file")):  # fmt: skip
                status, err = await upload(http, srv, camera=dev.camera, still="s2", image=image, content_type=declared)
                assert (status, err["error"]) == (415, f"the image is declared {declared} but its bytes are {found} "
                                                       "(stills must be JPEG or HEIC by their magic bytes)")  # fmt: skip
            heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
            status, body = await upload(http, srv, camera=dev.camera, still="s3", image=heic, content_type="image/heic")
            assert status == 201 and body["path"].endswith("s3.heic")
            status, body = await upload(http, srv, camera=dev.camera, still="s4", image=jpeg())
            assert status == 201 and (body["width"], body["height"]) == (64, 48)
            stored = sorted(p.name for p in (srv.config.data_dir / "stills").rglob("*") if p.is_file())
            assert stored == ["s3.heic", "s4.jpg"]
            assert [e["data"]["still"] for e in await events(http, srv, types="still.captured")] == ["s3", "s4"]
            assert not list((srv.config.data_dir / "tmp").iterdir())  # no temporary file left behind
            assert not [line for line in srv.logs if "internal error" in line]

    run(main())


# -- item 7: a non-UTF-8 Authorization header is a wrong token -------------------------------

BAD_AUTH = b"Authorization: Bearer \xff\xfe\xc3(\r\n"


def test_item7_non_utf8_authorization_is_401_on_serve(srv):
    async def main():
        for path in (b"/v1/state", b"/v1/events?since=0&follow=0", b"/v1/devices/ws"):
            status, body = await raw_http(srv.config.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + BAD_AUTH
                                          + b"Connection: close\r\n\r\n")  # fmt: skip
            assert (status, orjson.loads(body)) == (401, {"error": "wrong token"})
        status, body = await raw_http(srv.config.port, b"GET /v1/state?token=%FF%FE HTTP/1.1\r\nHost: x\r\n"
                                                       b"Connection: close\r\n\r\n")  # fmt: skip
        assert (status, orjson.loads(body)) == (401, {"error": "wrong token"})
        status, _ = await raw_http(srv.config.port, b"GET /v1/state HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                                    + TOKEN.encode() + b"\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert status == 200
        assert not [line for line in srv.logs if "internal error" in line]

    run(main())


def test_item7_non_utf8_authorization_is_401_on_mmx_relay():
    port = free_port()
    proc = subprocess.Popen([*MMX, "relay", "--port", str(port), "--token", "relay-tok"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        line = proc.stderr.readline().decode()
        assert f"listening on http://127.0.0.1:{port}" in line, line

        async def main():
            for method, path in ((b"GET", b"/status"), (b"POST", b"/whip/cam-1"), (b"POST", b"/whep/hero")):
                status, body = await raw_http(port, method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + BAD_AUTH
                                              + b"Content-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip
                assert (status, orjson.loads(body)) == (401, {"error": "missing or wrong token"})
            status, _ = await raw_http(port, b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer relay-tok\r\n"
                                             b"Connection: close\r\n\r\n")  # fmt: skip
            assert status == 200

        run(main())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "Traceback" not in err.decode() and "Error handling request" not in err.decode(), err.decode()[-2000:]


# -- placement at the door: 422 and the field named ------------------------------------------


def test_placement_values_are_checked_at_the_door_with_the_field_named(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-place", placement={"label": "front", "azimuth_deg": 10}).connect()
            url = f"/v1/cameras/{dev.camera}/placement"
            for placement, fld, message in (
                ({"azimuth_deg": "north"}, "azimuth_deg", "placement field 'azimuth_deg' must be a number, got a string"),
                ({"azimuth_deg": 720}, "azimuth_deg", "placement field 'azimuth_deg' must be from -360 to 360, got 720"),
                ({"elevation_deg": -91}, "elevation_deg", "placement field 'elevation_deg' must be from -90 to 90, got -91"),
                ({"distance_m": -1}, "distance_m", "placement field 'distance_m' must be from 0 to 1000, got -1"),
                ({"label": "l" * 129}, "label", "placement field 'label' is longer than 128 characters"),
            ):  # fmt: skip
                status, err = await call(http, srv, "PUT", url, placement)
                assert (status, err) == (422, {"error": message, "field": fld})
            status, cam = await call(http, srv, "PUT", url, {"azimuth_deg": -350, "elevation_deg": 90, "height_m": 2})
            assert status == 200 and cam["placement"] == {"azimuth_deg": -350, "elevation_deg": 90, "height_m": 2}
            # a hello's placement meets the same bounds
            ws = await http.ws_connect(srv.ws_url, headers=AUTH)
            await ws.send_str(orjson.dumps({"t": "hello", "device": "dev-far", "placement": {"distance_m": 1e9}}).decode())
            msg = orjson.loads((await ws.receive(timeout=5)).data)
            assert msg["error"] == "hello: placement field 'distance_m' must be from 0 to 1000, got 1e+09"

    run(main())


def test_stills_by_magic_bytes_keep_the_sha256_check(srv):
    """The magic-byte check sits beside, not instead of, the sha256 check."""

    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-sha").connect()
            image = jpeg()
            status, err = await upload(http, srv, camera=dev.camera, still="s9", image=image,
                                       sha256=hashlib.sha256(b"other").hexdigest())  # fmt: skip
            assert status == 422 and err["error"].startswith("sha256 mismatch")

    run(main())


# -- item 8: welcome before any command -----------------------------------------------------


def test_item8_a_command_posted_right_after_the_join_reaches_the_device_after_its_welcome(srv):
    """The registry's fsync (slowed to 0.4 s here, as on a busy disk) once sat between the
    camera going live and its welcome; a flip posted in that gap reached the device first."""
    registry_file = srv.server.registry.file
    plain_write = registry_file.write

    def slow_write(*args, **kwargs):
        time.sleep(0.4)
        return plain_write(*args, **kwargs)

    registry_file.write = slow_write

    async def device(http, name: str, order: list[str]) -> None:
        ws = await http.ws_connect(srv.ws_url, headers=AUTH)
        hello = {"t": "hello", "device": name, "name": f"renamed {time.monotonic()}",
                 "capabilities": {"facings": ["back", "front"], "lenses": {"back": [1], "front": [1]}},
                 "state": {"facing": "back", "zoom": 1}}  # fmt: skip
        await ws.send_str(orjson.dumps(hello).decode())
        async for msg in ws:
            obj = orjson.loads(msg.data)
            order.append(obj["t"])
            if obj["t"] == "command":
                if order[0] != "welcome":  # what mmx device does: a command before welcome is dropped
                    continue
                await ws.send_str(orjson.dumps({"t": "ack", "command_id": obj["command_id"], "ok": True,
                                                "state": {"facing": "front", "zoom": 1}}).decode())  # fmt: skip
                await ws.close()

    async def flip_as_soon_as_live(http, name: str) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, state = await call(http, srv, "GET", "/v1/state")
            cams = [c["camera"] for c in state["cameras"] if c["device"] == name and c["status"] == "live"]
            if cams:
                async with http.post(f"{srv.url}/v1/cameras/{cams[0]}/flip", json={}, headers=AUTH) as resp:
                    return resp.status
            await asyncio.sleep(0.005)
        raise AssertionError(f"{name} never went live")

    async def main():
        async with aiohttp.ClientSession() as http:
            for round_ in range(2):  # a new device, then the same device back with a new name
                order: list[str] = []
                dev = asyncio.create_task(device(http, "dev-race", order))
                status = await flip_as_soon_as_live(http, "dev-race")
                await asyncio.wait_for(dev, 10)
                assert order[:2] == ["welcome", "command"] and status == 200, (round_, order, status)
                deadline = time.monotonic() + 5
                while (await call(http, srv, "GET", "/v1/cameras"))[1][0]["status"] == "live":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)

    run(main())


# -- found by Schemathesis (tests/test_schemathesis.py) ---------------------------------------


def test_fuzz_login_with_a_broken_form_body_is_400_not_500(srv):
    async def main():
        for content_type, body, message in (
            (b"multipart/form-data", b'{"token": "x"}',
             "malformed multipart/form-data body: boundary missed for Content-Type: multipart/form-data"),
            (b"application/x-www-form-urlencoded", b"token=\xff\xfe",
             "malformed application/x-www-form-urlencoded body: 'utf-8' codec can't decode byte 0xff in position 6: "
             "invalid start byte"),
        ):  # fmt: skip
            status, answer = await raw_http(srv.config.port, b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                            + content_type + b"\r\nContent-Length: " + str(len(body)).encode()
                                            + b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip
            assert (status, orjson.loads(answer)) == (400, {"error": message})
        assert not [line for line in srv.logs if "internal error" in line]

    run(main())


def test_fuzz_405_names_the_methods_and_a_post_beside_the_commands_is_405_not_422(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-allow").connect()
            for method, path, allow in (("TRACE", "/v1/state", "GET,HEAD"),
                                        ("POST", f"/v1/cameras/{dev.camera}/placement", "PUT"),
                                        ("POST", f"/v1/cameras/{dev.camera}/preview.jpg", "GET,HEAD"),
                                        ("OPTIONS", f"/v1/cameras/{dev.camera}/preview.mjpeg", "GET,HEAD")):  # fmt: skip
                async with http.request(method, srv.url + path, headers=AUTH) as resp:
                    assert (resp.status, resp.headers.get("Allow")) == (405, allow), (method, path)
                    assert (await resp.json())["error"] == f"method {method} not allowed here: {method} {path}"
            # an unknown command is still the 422 of DESIGN.md
            status, err = await call(http, srv, "POST", f"/v1/cameras/{dev.camera}/teleport", {})
            assert (status, err["error"]) == (422, "unsupported command 'teleport': use flip, zoom, still")

    run(main())


def test_fuzz_posted_event_with_a_src_or_v_of_the_wrong_type_is_422(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            for field, value, message in (("src", {}, "field 'src' must be a string, got an object"),
                                          ("src", 0, "field 'src' must be a string, got a number"),
                                          ("v", 22375876142924685312, "field 'v' must be a whole number, got 2.23759e+19"),
                                          ("v", 1.5, "field 'v' must be a whole number, got 1.5")):  # fmt: skip
                status, err = await call(http, srv, "POST", "/v1/events", {"type": "still.marker", field: value,
                                                                           "data": {"label": "x"}})  # fmt: skip
                assert (status, err["error"]) == (422, message)
            # null (as the document says) and left out are filled in
            for body in ({"type": "still.marker", "src": None, "ts": None, "data": {"label": "a"}},
                         {"type": "still.marker", "data": {"label": "b"}}):  # fmt: skip
                assert (await call(http, srv, "POST", "/v1/events", body))[0] == 202
            posted = await events(http, srv, types="still.marker")
            assert [(e["data"]["label"], e["src"]) for e in posted] == [("a", "operator"), ("b", "operator")]

    run(main())


def test_fuzz_a_by_that_is_no_string_is_400_not_operator(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            for path, body, message in (("/v1/director/mode", {"mode": "ghost", "by": {}}, "by must be a string"),
                                        ("/v1/director/release", {"by": 0}, "by must be a string"),
                                        ("/v1/ghost/p-1/veto", {"by": []}, "by must be a string of at most 128 characters")):  # fmt: skip
                status, err = await call(http, srv, "POST", path, body)
                assert (status, err["error"]) == (400, message), path
            assert (await call(http, srv, "GET", "/v1/director"))[1]["mode"] == "manual"
            status, state = await call(http, srv, "POST", "/v1/director/mode", {"mode": "ghost", "by": ""})
            assert (status, state["mode"]) == (200, "ghost")
            assert (await events(http, srv, types="director.mode"))[-1]["data"]["by"] == "operator"

    run(main())


def test_fuzz_an_empty_put_placement_is_400_and_keeps_the_placement(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-keep", placement={"label": "front", "azimuth_deg": 10}).connect()
            url = f"{srv.url}/v1/cameras/{dev.camera}/placement"
            async with http.put(url, headers=AUTH) as resp:
                assert (resp.status, await resp.json()) == (400, {"error": "PUT placement takes a JSON placement "
                                                                           "object (send {} to clear it)"})  # fmt: skip
            cam = (await call(http, srv, "GET", f"/v1/cameras/{dev.camera}"))[1]
            assert cam["placement"] == {"label": "front", "azimuth_deg": 10}
            status, cam = await call(http, srv, "PUT", f"/v1/cameras/{dev.camera}/placement", {})
            assert (status, cam["placement"]) == (200, {})

    run(main())


def test_fuzz_an_empty_since_is_400(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.url + "/v1/events", params={"since": "", "follow": "0"}, headers=AUTH) as resp:
                assert (resp.status, await resp.json()) == (400, {"error": "since must be a whole number (an event "
                                                                           "seq), got ''"})  # fmt: skip

    run(main())
