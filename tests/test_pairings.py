"""Camera pairings: create, list, revoke, persistence, what a camera token may do, and the QR codes.

A real `mmx serve` on loopback (`ServerThread`), real WebSocket clients (aiohttp, and `mmx
device` with a camera token); QR codes are decoded with zxing-cpp from the very SVG and
terminal text the server makes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import subprocess
import time
import xml.etree.ElementTree as ET

import aiohttp
import numpy as np
import orjson
import pytest

from mmx.errors import IOFailure
from mmx.serve import Server
from mmx.serve.pairings import TOKEN_PREFIX, PairingStore
from mmx.serve.qr import svg_qr, terminal_qr

from .conftest import MMX, free_port
from .test_serve import AUTH, TOKEN, ServerThread, call, events, jpeg, make_server, srv, upload  # noqa: F401

zxingcpp = pytest.importorskip("zxingcpp")


# -- QR decoding: the exact bytes the server makes, back to text ---------------------------


def _decode(modules: np.ndarray) -> str:
    """Decode a module matrix (True = dark) drawn at 8 px a module on a white quiet zone."""
    image = np.where(np.kron(modules, np.ones((8, 8), dtype=bool)), 0, 255).astype(np.uint8)
    image = np.pad(image, 32, constant_values=255)
    found = zxingcpp.read_barcodes(image)
    assert found, "no QR code found"
    return found[0].text


def decode_svg(svg: bytes) -> str:
    """Rasterise segno's SVG (one path of ``M x y``, ``m dx dy``, ``h n`` strokes at scale s)."""
    root = ET.fromstring(svg)
    ns = {"svg": "http://www.w3.org/2000/svg"}
    size = int(root.get("width"))
    group = root.find("svg:g", ns)
    scale = float(re.fullmatch(r"scale\((\d+(?:\.\d+)?)\)", group.get("transform")).group(1))
    path = next(p for p in group.findall("svg:path", ns) if p.get("stroke") == "#000")
    n = round(size / scale)
    modules = np.zeros((n, n), dtype=bool)
    x = y = 0.0
    for cmd, a, b in re.findall(r"([MmHh])(-?[\d.]+)(?:\s+(-?[\d.]+))?", path.get("d")):
        if cmd == "M":
            x, y = float(a), float(b)
        elif cmd == "m":
            x, y = x + float(a), y + float(b)
        else:  # h: a dark run along row y - 0.5
            modules[int(y - 0.5), int(x):int(x + float(a))] = True
            x += float(a)
    return _decode(modules)


def decode_terminal(text: str) -> str:
    """Undo segno's compact terminal drawing: each character is two modules (top, bottom), light drawn."""
    lines = [line for line in text.splitlines() if line.strip()]
    width = max(len(line) for line in lines)
    light = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}
    rows = []
    for line in lines:
        top, bottom = zip(*(light[ch] for ch in line.ljust(width)))
        rows += [top, bottom]
    return _decode(~np.array(rows, dtype=bool))


def test_qr_codes_decode_to_the_link():
    link = "https://192.168.50.10:8750/camera#token=" + TOKEN_PREFIX + "x" * 32
    assert decode_svg(svg_qr(link)) == link
    assert decode_terminal(terminal_qr(link)) == link
    assert decode_svg(svg_qr("http://127.0.0.1:1/camera#token=a")) != link  # the decoder reads, not echoes


# -- the API --------------------------------------------------------------------------------


async def join(http: aiohttp.ClientSession, srv: ServerThread, token: str, device: str, *, query: bool = False):
    """Open the device socket with ``token`` (header, or ?token= as a browser must), send hello; (ws, welcome)."""
    if query:
        ws = await http.ws_connect(srv.ws_url + f"?token={token}")
    else:
        ws = await http.ws_connect(srv.ws_url, headers={"Authorization": f"Bearer {token}"})
    await ws.send_str(orjson.dumps({"t": "hello", "token": token, "device": device, "name": device,
                                    "capabilities": {"lenses": {"back": [1]}}, "ts": time.time()}).decode())  # fmt: skip
    msg = await ws.receive(timeout=5)
    welcome = orjson.loads(msg.data)
    assert welcome["t"] == "welcome", welcome
    return ws, welcome


async def _request(http, srv, method, path, token, body=None):
    async with http.request(method, srv.url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.read()


def test_create_list_show_qr_and_revoke(srv):
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            status, made = await call(http, srv, "POST", "/v1/pairings", {"name": "phone A"})
            assert status == 201
            assert set(made) >= {"id", "token", "url", "name", "created_at", "cameras"}
            assert made["token"].startswith(TOKEN_PREFIX) and len(made["token"]) == len(TOKEN_PREFIX) + 32
            assert made["url"] == f"{srv.url}/camera#token={made['token']}"  # the fragment, never the query
            assert "?" not in made["url"]
            status, other = await call(http, srv, "POST", "/v1/pairings", {})
            assert status == 201 and other["token"] != made["token"] and other["name"] == ""

            status, listed = await call(http, srv, "GET", "/v1/pairings")
            assert status == 200
            assert [p["id"] for p in listed["pairings"]] == [made["id"], other["id"]]
            assert listed["pairings"][0] == {"id": made["id"], "name": "phone A", "created_at": made["created_at"],
                                             "last_used_at": None, "cameras": [], "connected": 0}  # fmt: skip
            assert made["token"] not in orjson.dumps(listed).decode()  # no secret in a list

            status, shown = await call(http, srv, "GET", f"/v1/pairings/{made['id']}")
            assert status == 200 and shown["token"] == made["token"] and shown["url"] == made["url"]

            async with http.get(srv.url + f"/v1/pairings/{made['id']}/qr.svg", headers=AUTH) as resp:
                assert resp.status == 200
                assert resp.content_type == "image/svg+xml" and resp.headers["Cache-Control"] == "no-store"
                assert decode_svg(await resp.read()) == made["url"]

            status, err = await call(http, srv, "POST", "/v1/pairings", {"name": 7})
            assert (status, err["error"]) == (400, "name must be a string")
            status, err = await call(http, srv, "POST", "/v1/pairings", {"name": "n" * 81})
            assert (status, err["error"]) == (400, "name is longer than 80 characters")

            status, gone = await call(http, srv, "DELETE", f"/v1/pairings/{made['id']}")
            assert (status, gone) == (200, {"id": made["id"], "revoked": True, "disconnected": 0})
            status, err = await call(http, srv, "DELETE", f"/v1/pairings/{made['id']}")
            assert (status, err["error"]) == (404, f"unknown pairing {made['id']!r}")
            status, listed = await call(http, srv, "GET", "/v1/pairings")
            assert [p["id"] for p in listed["pairings"]] == [other["id"]]
            status, _ = await _request(http, srv, "GET", "/v1/devices/ws", made["token"])
            assert status == 401  # a revoked token is just a wrong token

    asyncio.run(main())


def test_a_camera_token_opens_the_device_socket_and_uploads_its_stills_and_nothing_else(srv):
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            _, pairing = await call(http, srv, "POST", "/v1/pairings", {"name": "phone"})
            cam_token = pairing["token"]
            # an operator-token camera, whose stills and state the phone must not touch
            op_ws, op_welcome = await join(http, srv, TOKEN, "dev-operator")
            ws, welcome = await join(http, srv, cam_token, "dev-phone", query=True)  # ?token=, as a browser
            assert welcome["camera"] == "cam-2"
            status, state = await call(http, srv, "GET", "/v1/state")
            assert {c["camera"]: c["status"] for c in state["cameras"]} == {"cam-1": "live", "cam-2": "live"}

            image = jpeg(320, 240)
            status, body = await upload(http, srv, camera="cam-2", still="s-1", image=image, token=cam_token)
            assert status == 201 and body["sha256"] == hashlib.sha256(image).hexdigest()
            status, err = await upload(http, srv, camera=op_welcome["camera"], still="s-2", image=image, token=cam_token)
            assert (status, err["error"]) == (403, "this camera token may upload stills only for its own cameras, not 'cam-1'")

            forbidden = [("POST", "/v1/director/cut", {"to": "cam-2"}), ("GET", "/v1/state", None),
                         ("GET", "/v1/events", None), ("GET", "/v1/pairings", None),
                         ("POST", "/v1/pairings", {}), ("DELETE", f"/v1/pairings/{pairing['id']}", None),
                         ("GET", f"/v1/pairings/{pairing['id']}/qr.svg", None), ("GET", "/v1/cameras/cam-1/preview.jpg", None),
                         ("POST", "/v1/cameras/cam-1/flip", {}), ("PUT", "/v1/cameras/cam-2/placement", {"label": "x"}),
                         ("POST", "/v1/session/start", {}), ("GET", "/v1/coverage", None)]  # fmt: skip
            for method, path, body in forbidden:
                status, raw = await _request(http, srv, method, path, cam_token, body)
                assert status == 403, (method, path, status, raw)
                assert orjson.loads(raw) == {"error": "a camera token may only open the device WebSocket and upload stills"}
            status, raw = await _request(http, srv, "GET", "/v1/state", TOKEN_PREFIX + "y" * 32)
            assert status == 401
            status, state = await call(http, srv, "GET", "/v1/state")
            assert state["program"] is None  # the forbidden cut did nothing

            status, listed = await call(http, srv, "GET", "/v1/pairings")
            entry = listed["pairings"][0]
            assert entry["cameras"] == ["cam-2"] and entry["connected"] == 1 and entry["last_used_at"] is not None
            await ws.close()
            await op_ws.close()

    asyncio.run(main())


def test_a_revoked_token_is_disconnected_within_a_second(srv):
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            _, pairing = await call(http, srv, "POST", "/v1/pairings", {"name": "phone"})
            _, spare = await call(http, srv, "POST", "/v1/pairings", {"name": "spare"})
            ws, welcome = await join(http, srv, pairing["token"], "dev-phone")
            ws2, _ = await join(http, srv, pairing["token"], "dev-phone-2")
            ws_spare, _ = await join(http, srv, spare["token"], "dev-spare")
            status, gone = await call(http, srv, "DELETE", f"/v1/pairings/{pairing['id']}")
            assert (status, gone["disconnected"]) == (200, 2)
            for sock in (ws, ws2):
                msg = await sock.receive(timeout=1.0)  # the close frame, within a second of the answer
                assert msg.type == aiohttp.WSMsgType.CLOSE, msg
                assert (msg.data, msg.extra) == (4401, "pairing revoked")
            left = [e["data"] for e in await events(http, srv, types="camera.left")]
            assert {"camera": welcome["camera"], "device": "dev-phone", "reason": "revoked"} in left
            # the other pairing's camera stays
            await ws_spare.send_str('{"t": "heartbeat"}')
            status, state = await call(http, srv, "GET", "/v1/state")
            assert {c["name"]: c["status"] for c in state["cameras"]} == {"dev-phone": "lost", "dev-phone-2": "lost",
                                                                          "dev-spare": "live"}  # fmt: skip
            async with http.ws_connect(srv.ws_url, headers={"Authorization": f"Bearer {pairing['token']}"}) as again:
                pytest.fail(f"a revoked token opened the socket: {again}")

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        asyncio.run(main())
    assert refused.value.status == 401


def test_mmx_device_with_a_camera_token_joins_and_stops_when_revoked(srv, tmp_path):
    async def make() -> dict:
        async with aiohttp.ClientSession() as http:
            return (await call(http, srv, "POST", "/v1/pairings", {"name": "mmx device"}))[1]

    pairing = asyncio.run(make())
    err = open(tmp_path / "device.err", "wb")
    proc = subprocess.Popen([*MMX, "device", "--server", srv.url, "--token", pairing["token"], "--name", "tokened",
                             "--fps", "5", "--size", "160x90", "--state-dir", str(tmp_path / "dev")],
                            stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    try:
        async def until_live() -> None:
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 30
                while True:
                    _, state = await call(http, srv, "GET", "/v1/state")
                    if any(c["name"] == "tokened" and c["status"] == "live" and c["preview_frames"] for c in state["cameras"]):
                        break
                    assert proc.poll() is None, (tmp_path / "device.err").read_text()
                    assert time.monotonic() < deadline, "mmx device did not turn live"
                    await asyncio.sleep(0.1)
                status, _ = await call(http, srv, "DELETE", f"/v1/pairings/{pairing['id']}")
                assert status == 200

        asyncio.run(until_live())
        code = proc.wait(15)  # 4401 is final for mmx device: no reconnect loop
        assert code == 69, (tmp_path / "device.err").read_text()
        assert "token" in (tmp_path / "device.err").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pairings_and_camera_bindings_survive_a_restart(tmp_path):
    first = make_server(tmp_path)
    image = jpeg(64, 48)

    async def before() -> tuple[dict, dict]:
        async with aiohttp.ClientSession() as http:
            _, keep = await call(http, first, "POST", "/v1/pairings", {"name": "keep"})
            _, drop = await call(http, first, "POST", "/v1/pairings", {"name": "drop"})
            ws, welcome = await join(http, first, keep["token"], "dev-keep")
            await ws.close()
            await call(http, first, "DELETE", f"/v1/pairings/{drop['id']}")
            return keep, drop

    keep, drop = asyncio.run(before())
    first.stop()
    stored = orjson.loads((tmp_path / "data" / "pairings.json").read_bytes())
    assert [p["name"] for p in stored["pairings"]] == ["keep"]
    assert (tmp_path / "data" / "pairings.json").stat().st_mode & 0o077 == 0  # tokens inside: owner only

    second = ServerThread(tmp_path / "data")
    second.config.port = first.config.port
    second.start()
    try:
        async def after() -> None:
            async with aiohttp.ClientSession() as http:
                _, listed = await call(http, second, "GET", "/v1/pairings")
                assert [(p["id"], p["cameras"]) for p in listed["pairings"]] == [(keep["id"], ["cam-1"])]
                ws, welcome = await join(http, second, keep["token"], "dev-keep")
                assert welcome["camera"] == "cam-1"
                status, _ = await upload(http, second, camera="cam-1", still="kept", image=image, token=keep["token"])
                assert status == 201
                await ws.close()
                status, _ = await _request(http, second, "GET", "/v1/devices/ws", drop["token"])
                assert status == 401

        asyncio.run(after())
    finally:
        second.stop()


def test_a_damaged_pairings_file_is_reported_and_kept(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "pairings.json").write_text('{"pairings": [{"id": "x"}]}')
    with pytest.raises(IOFailure) as exc:
        PairingStore(data)
    assert exc.value.message == f"{data / 'pairings.json'} is not a pairings file: KeyError: 'token'"
    assert "every phone pairs again" in exc.value.hint
    from mmx.serve import ServeConfig

    with pytest.raises(IOFailure):
        Server(ServeConfig(data_dir=data, token=TOKEN, port=free_port()))
    assert (data / "pairings.json").read_text() == '{"pairings": [{"id": "x"}]}'


# -- mmx serve prints the camera link and its QR code ---------------------------------------


def _serve_stderr(tmp_path, *args: str) -> tuple[str, str]:
    """Start `mmx serve`, read stderr up to the camera link (and the QR code after it), stop it."""
    err_path = tmp_path / f"serve-{time.monotonic_ns()}.err"
    proc = subprocess.Popen([*MMX, "serve", "--port", str(free_port()), "--token", TOKEN, "--data", str(tmp_path / "data"),
                             "--no-record", *args], stdout=subprocess.DEVNULL, stderr=open(err_path, "wb"))  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            text = err_path.read_text()
            done = "camera: " in text and ("--qr" not in args or text.rstrip().endswith("▀"))
            if done:
                break
            assert proc.poll() is None, text
            assert time.monotonic() < deadline, f"no camera link printed: {text}"
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(15)
    link = re.search(r"^camera: (\S+)$", text, re.M).group(1)
    return link, text


def test_serve_prints_the_default_camera_link_and_its_qr_code_and_keeps_it(tmp_path):
    link, text = _serve_stderr(tmp_path, "--qr")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/camera#token=" + TOKEN_PREFIX + r"[A-Za-z0-9_-]{32}", link)
    qr = text[text.index(link) + len(link):]
    assert decode_terminal(qr) == link
    assert f"token: {TOKEN}" not in text  # a given operator token stays off the log
    token = link.split("#token=")[1]
    again, text2 = _serve_stderr(tmp_path, "--no-qr")
    assert again.split("#token=")[1] == token  # the default pairing is kept: printed codes keep working
    assert "█" not in text2
    stored = orjson.loads((tmp_path / "data" / "pairings.json").read_bytes())
    assert [p["name"] for p in stored["pairings"]] == ["default"]


@pytest.mark.parametrize("args, message", [
    (["--cert", "c.pem"], "--cert and --key go together"),
    (["--cert", "c.pem", "--key", "k.pem"], "--cert/--key serve the LAN over HTTPS: add --lan"),
    (["--public-url", "phone.local:8750"], "must start with http:// or https://"),
])  # fmt: skip
def test_serve_refuses_half_tls_options(tmp_path, args, message):
    proc = subprocess.run([*MMX, "serve", "--port", "0", "--data", str(tmp_path / "data"), *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
