"""The published contract: docs/openapi.yaml against the real routes, its served copy, and
docs/device-messages.schema.json against the messages a real `mmx device` and `mmx serve`
exchange (recorded by a WebSocket proxy between them)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import jsonschema_rs
import orjson
import pytest
import yaml
from aiohttp import web

from mmx.serve import ServeConfig, Server

from .conftest import MMX, ROOT, free_port
from .test_serve import AUTH, TOKEN, ServerThread, run

SPEC_PATH = ROOT / "docs" / "openapi.yaml"
MESSAGES_PATH = ROOT / "docs" / "device-messages.schema.json"
METHODS = ("get", "put", "post", "delete", "patch")
#: Routes of `mmx relay` the document leaves out, and why.
RELAY_NOT_DOCUMENTED = {("GET", "/"): "the relay's viewer page shares the path '/' with serve's console page"}


def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def spec_operations(doc: dict, *, relay: bool) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation of serve (``relay`` False) or of the relay."""
    out = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is not None and ("relay" in op.get("tags", [])) == relay:
                out.append((method.upper(), path))
    return out


def app_routes(app: web.Application) -> list[tuple[str, str]]:
    """(METHOD, pattern) of every route (aiohttp's automatic HEAD left out)."""
    return [(r.method, r.resource.canonical) for r in app.router.routes() if r.method not in ("HEAD", "*")]


def resolve(app: web.Application, method: str, path: str) -> str | None:
    """The route pattern ``METHOD path`` reaches, resolved as aiohttp does (first resource whose
    path matches and that has the method); ``{param}`` placeholders become a sample value."""
    concrete = re.sub(r"\{[^}]+\}", "sample", path)
    for resource in app.router.resources():
        info = resource.get_info()
        if "path" in info:
            matched = info["path"] == concrete
        elif "pattern" in info:
            matched = info["pattern"].fullmatch(concrete) is not None
        else:
            continue
        if matched and any(route.method == method for route in resource):
            return resource.canonical
    return None


def check_routes(app: web.Application, doc: dict, *, relay: bool, skip: dict | None = None) -> list[str]:
    """Every problem between the app's routes and the document, one readable line each."""
    who = "mmx relay" if relay else "mmx serve"
    operations = spec_operations(doc, relay=relay)
    problems = []
    reached: set[tuple[str, str]] = set()
    for method, path in operations:
        pattern = resolve(app, method, path)
        if pattern is None:
            problems.append(f"docs/openapi.yaml names {method} {path}, which {who} does not serve: "
                            f"remove it or add the route")  # fmt: skip
        else:
            reached.add((method, pattern))
    for method, pattern in app_routes(app):
        if (method, pattern) in (skip or {}):
            continue
        if (method, pattern) not in reached:
            problems.append(f"route {method} {pattern} of {who} is missing from docs/openapi.yaml: add "
                            f"paths['{pattern}'].{method.lower()} (with its responses) and run "
                            f"python scripts/gen_openapi.py")  # fmt: skip
    return problems


def serve_app() -> web.Application:
    with tempfile.TemporaryDirectory() as tmp:
        return Server(ServeConfig(data_dir=Path(tmp) / "data", token=TOKEN)).make_app()


def test_every_serve_route_is_in_the_openapi_document_and_back():
    problems = check_routes(serve_app(), spec(), relay=False)
    assert not problems, "\n".join(problems)


def test_every_relay_route_is_in_the_openapi_document_and_back():
    from mmx.relay.server import Relay

    async def routes() -> list[str]:
        relay = Relay(token=TOKEN)
        try:
            return check_routes(relay.app, spec(), relay=True, skip=RELAY_NOT_DOCUMENTED)
        finally:
            await relay.close()

    problems = run(routes())
    assert not problems, "\n".join(problems)


def test_the_route_check_names_a_missing_route_exactly():
    app = serve_app()
    doc = spec()
    del doc["paths"]["/v1/coverage"]
    doc["paths"]["/v1/nowhere"] = {"get": {"responses": {"200": {"description": "x"}}}}
    assert check_routes(app, doc, relay=False) == [
        "docs/openapi.yaml names GET /v1/nowhere, which mmx serve does not serve: remove it or add the route",
        "route GET /v1/coverage of mmx serve is missing from docs/openapi.yaml: add paths['/v1/coverage'].get "
        "(with its responses) and run python scripts/gen_openapi.py",
    ]


def test_the_served_document_is_docs_openapi_yaml_and_public(tmp_path):
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_openapi.py"), "--check"],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    server = ServerThread(tmp_path / "data").start()
    try:
        async def main():
            async with aiohttp.ClientSession() as http:
                async with http.get(server.url + "/v1/openapi.json") as resp:  # no token
                    assert resp.status == 200 and resp.content_type == "application/json"
                    return await resp.json()

        served = run(main())
    finally:
        server.stop()
    assert served == spec()
    assert served["openapi"].startswith("3.1")
    # every error answer is the one Error shape
    errors = {name for name, r in served["components"]["responses"].items() if name != "Director"}
    for name in errors:
        assert served["components"]["responses"][name]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"}


def test_the_device_message_schema_is_a_valid_json_schema():
    schema = json.loads(MESSAGES_PATH.read_text(encoding="utf-8"))
    validator = jsonschema_rs.Draft202012Validator(schema)
    good = [{"t": "hello", "device": "d"}, {"t": "heartbeat", "ts": 1795264000.0},
            {"t": "command", "command_id": "c", "command": "zoom", "args": {"zoom": 0.5}}]
    bad = [{"t": "hello"}, {"t": "hello", "device": "d", "capabilities": {"lenses": {"back": 5}}},
           {"t": "command", "command_id": "c", "command": "zoom", "args": {}},
           {"t": "pose", "ts": 1, "joints": {"tail": [0, 0, 1]}}, {"t": "selfie"}]  # fmt: skip
    assert [validator.is_valid(m) for m in good] == [True] * len(good)
    assert [validator.is_valid(m) for m in bad] == [False] * len(bad)


# -- a recording proxy between a real mmx device and a real mmx serve ------------------------


class RecordingProxy:
    """Forwards HTTP and the device WebSocket to ``upstream``, recording every text message."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.from_device: list[dict] = []
        self.from_server: list[dict] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> str:
        self._http = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_get("/v1/devices/ws", self._ws)
        app.router.add_route("*", "/{tail:.*}", self._http_pass)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _http_pass(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._http.request(request.method, self.upstream + request.path_qs, headers=headers,
                                      data=await request.read()) as resp:  # fmt: skip
            return web.Response(status=resp.status, body=await resp.read(),
                                headers={"Content-Type": resp.headers.get("Content-Type", "application/octet-stream")})

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        down = web.WebSocketResponse(max_msg_size=16 << 20)
        await down.prepare(request)
        up = await self._http.ws_connect(self.upstream.replace("http", "ws", 1) + "/v1/devices/ws",
                                         headers={"Authorization": request.headers.get("Authorization", "")},
                                         max_msg_size=16 << 20)  # fmt: skip

        async def pump(src, dst, into: list[dict]) -> None:
            async for msg in src:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    into.append(orjson.loads(msg.data))
                    await dst.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
            await dst.close()

        await asyncio.gather(pump(down, up, self.from_device), pump(up, down, self.from_server),
                             return_exceptions=True)  # fmt: skip
        return down


@pytest.mark.slow
def test_the_messages_mmx_device_and_mmx_serve_exchange_match_the_schema(tmp_path, shared_data):
    validator = jsonschema_rs.Draft202012Validator(json.loads(MESSAGES_PATH.read_text(encoding="utf-8")))
    server = ServerThread(tmp_path / "data", device_timeout_s=3.0, ack_timeout_s=5.0, heartbeat_s=0.25).start()

    async def main():
        proxy = RecordingProxy(server.url)
        url = await proxy.start()
        device = subprocess.Popen([*MMX, "device", "--server", url, "--token", TOKEN, "--name", "schema",
                                   "--state-dir", str(tmp_path / "state"), "--fps", "5", "--size", "320x180",
                                   "--pose", str(shared_data / "pose" / "vtest.pose.jsonl"), "--pose-offset-s", "20",
                                   "--placement", "label=front,azimuth_deg=0,distance_m=3"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        try:
            async with aiohttp.ClientSession(headers=AUTH) as http:
                async def wait(predicate, what: str, timeout: float = 30.0):
                    deadline = time.monotonic() + timeout
                    while not predicate():
                        assert device.poll() is None, device.stderr.read().decode()[-2000:]
                        assert time.monotonic() < deadline, f"{what} within {timeout} s"
                        await asyncio.sleep(0.05)

                await wait(lambda: any(m.get("t") == "welcome" for m in proxy.from_server), "welcome")
                cam = next(m for m in proxy.from_server if m["t"] == "welcome")["camera"]

                async def post(path, body=None):
                    async with http.post(server.url + path, json=body or {}) as resp:
                        assert resp.status in (200, 201), await resp.text()

                await post("/v1/session/start", {"title": "schema"})
                for path, body in ((f"/v1/cameras/{cam}/zoom", {"zoom": 2}), (f"/v1/cameras/{cam}/flip", None),
                                   (f"/v1/cameras/{cam}/still", None)):  # fmt: skip
                    await post(path, body)
                async with http.put(f"{server.url}/v1/cameras/{cam}/placement", json={"azimuth_deg": 30}) as resp:
                    assert resp.status == 200
                await post("/v1/director/cut", {"to": cam})
                await wait(lambda: {"pose", "frame", "heartbeat", "state", "ack", "still.ready"}
                           <= {m.get("t") for m in proxy.from_device}, "every kind of device message")
                await post("/v1/session/stop")
                await wait(lambda: {"welcome", "command", "tally", "placement", "session"}
                           <= {m.get("t") for m in proxy.from_server}, "every kind of server message")
        finally:
            device.send_signal(signal.SIGTERM)
            device.wait(15)
            await proxy.stop()
        return proxy

    try:
        proxy = run(main())
    finally:
        server.stop()
    assert proxy.from_device[0]["t"] == "hello" and proxy.from_server[0]["t"] == "welcome"
    for side, messages in (("device", proxy.from_device), ("server", proxy.from_server)):
        wrong = [(m, [e.message for e in validator.iter_errors(m)][:3]) for m in messages if not validator.is_valid(m)]
        assert not wrong, f"{side} messages outside docs/device-messages.schema.json: {wrong[:3]}"
    device_only = jsonschema_rs.Draft202012Validator(
        {**json.loads(MESSAGES_PATH.read_text(encoding="utf-8")), "oneOf": [{"$ref": "#/$defs/deviceToServer"}]})
    assert all(device_only.is_valid(m) for m in proxy.from_device)
