"""The console's server side without a browser: the page and its files, the cookie login,
``POST /v1/ghost/{proposal}/accept|veto`` and the field-of-view arcs of ``GET /v1/coverage``."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from mmx.serve.auth import SESSION_COOKIE, session_cookie_value
from mmx.serve.coverage import compute_coverage, horizontal_fov_deg

from .test_serve import AUTH, TOKEN, srv  # noqa: F401 - srv is a fixture


async def _req(srv, method: str, path: str, *, headers=AUTH, **kw):
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.request(method, srv.url + path, allow_redirects=False, **kw) as resp:
            body = await resp.read()
            return resp.status, resp.headers, body


def req(srv, method: str, path: str, **kw):
    return asyncio.run(_req(srv, method, path, **kw))


def propose(srv, pid: str, **kw) -> None:
    asyncio.run(apropose(srv, pid, **kw))


async def apropose(srv, pid: str, *, cut_in_s: float = 5.0, expires_in_s: float = 10.0, to: str = "cam-2") -> None:
    now = time.time()
    status, _h, body = await _req(srv, "POST", "/v1/events", json={
        "type": "ghost.proposed", "src": "ghost",
        "data": {"proposal": pid, "from": "cam-1", "to": to, "score": 0.8, "cut_at": now + cut_in_s,
                 "expires_at": now + expires_in_s, "reasons": [{"feature": "gain", "text": "better"}]}})  # fmt: skip
    assert status == 202, body


def ghost_events(srv) -> list[dict]:
    import orjson

    status, _h, body = req(srv, "GET", "/v1/events", params={"since": "0", "follow": "0", "types": "ghost.*"})
    assert status == 200
    return [orjson.loads(line) for line in body.splitlines() if line.strip()]


def test_the_page_and_its_files_are_public_and_the_api_is_not(srv):
    for path in ("/", "/console"):
        status, headers, body = req(srv, "GET", path, headers={})
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'id="ghost-banner"' in body and b"/static/console/console.js" in body
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, headers, body = req(srv, "GET", "/static/console/console.js", headers={})
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"/v1/events" in body
    status, headers, _b = req(srv, "GET", "/static/console/console.css", headers={})
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    for bad in ("/static/console/nope.js", "/static/console/..%2Fapp.py", "/static/console/.hidden.js"):
        assert req(srv, "GET", bad, headers={})[0] == 404, bad
    assert req(srv, "GET", "/v1/state", headers={})[0] == 401
    assert req(srv, "GET", "/v1/ghost", headers={})[0] == 401


def test_token_link_sets_an_httponly_strict_cookie_and_a_wrong_one_says_so(srv):
    status, headers, _b = req(srv, "GET", f"/?token={TOKEN}", headers={})
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert f"{SESSION_COOKIE}={session_cookie_value(TOKEN)}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie and TOKEN not in cookie
    status, headers, _b = req(srv, "GET", "/?token=wrong", headers={})
    assert status == 303 and headers["Location"] == "/?login=wrong" and "Set-Cookie" not in headers
    # the cookie alone authenticates the API
    jar = {"Cookie": f"{SESSION_COOKIE}={session_cookie_value(TOKEN)}"}
    assert req(srv, "GET", "/v1/state", headers=jar)[0] == 200
    assert req(srv, "GET", "/v1/state", headers={"Cookie": f"{SESSION_COOKIE}=forged"})[0] == 401


def test_login_endpoint(srv):
    status, _h, body = req(srv, "POST", "/v1/login", headers={}, json={"token": "nope"})
    assert status == 401 and b"wrong token" in body
    status, headers, _b = req(srv, "POST", "/v1/login", headers={}, json={"token": TOKEN})
    assert status == 204 and "HttpOnly" in headers["Set-Cookie"]
    status, headers, _b = req(srv, "POST", "/v1/login", headers={}, data={"token": TOKEN})
    assert status == 303 and headers["Location"] == "/" and SESSION_COOKIE in headers["Set-Cookie"]
    status, headers, _b = req(srv, "POST", "/v1/login", headers={}, data={"token": "nope"})
    assert status == 303 and headers["Location"] == "/?login=wrong"
    status, headers, _b = req(srv, "POST", "/v1/logout", headers={})
    assert status == 204 and f"{SESSION_COOKIE}=" in headers["Set-Cookie"]


def test_accept_records_ghost_accepted_once(srv):
    propose(srv, "p-acc")
    status, _h, body = req(srv, "GET", "/v1/ghost")
    assert status == 200 and b'"pending":{' in body and b"p-acc" in body
    status, _h, body = req(srv, "POST", "/v1/ghost/p-acc/accept", json={})
    assert status == 200, body
    import orjson

    assert orjson.loads(body)["status"] == "accepted"
    accepted = [e for e in ghost_events(srv) if e["type"] == "ghost.accepted"]
    assert len(accepted) == 1
    assert accepted[0]["data"] == {"proposal": "p-acc", "by": "operator"} and accepted[0]["src"] == "operator"
    status, _h, body = req(srv, "POST", "/v1/ghost/p-acc/accept")
    assert status == 409 and orjson.loads(body)["error"] == "proposal p-acc is already accepted by operator"
    assert req(srv, "POST", "/v1/ghost/p-acc/veto")[0] == 409
    assert len([e for e in ghost_events(srv) if e["type"] in ("ghost.accepted", "ghost.vetoed")]) == 1


def test_veto_unknown_expired_and_bad_requests(srv):
    import orjson

    propose(srv, "p-veto")
    status, _h, body = req(srv, "POST", "/v1/ghost/p-veto/veto", json={"by": "director-2"})
    assert status == 200 and orjson.loads(body)["status"] == "vetoed"
    vetoed = [e for e in ghost_events(srv) if e["type"] == "ghost.vetoed"]
    assert [e["data"] for e in vetoed] == [{"proposal": "p-veto", "by": "director-2"}]
    assert req(srv, "POST", "/v1/ghost/p-veto/accept")[0] == 409

    status, _h, body = req(srv, "POST", "/v1/ghost/nope/accept")
    assert status == 404 and orjson.loads(body)["error"] == "unknown proposal 'nope'"
    assert req(srv, "POST", "/v1/ghost/p-veto/maybe")[0] == 404
    assert req(srv, "POST", "/v1/ghost/p-veto/accept", headers={})[0] == 401

    propose(srv, "p-late", cut_in_s=-2, expires_in_s=-1)  # its expires_at has passed unanswered
    status, _h, body = req(srv, "POST", "/v1/ghost/p-late/accept")
    assert status == 409 and "already expired" in orjson.loads(body)["error"]

    propose(srv, "p-exp")
    req(srv, "POST", "/v1/events", json={"type": "ghost.expired", "src": "ghost", "data": {"proposal": "p-exp", "by": "ghost"}})
    assert req(srv, "POST", "/v1/ghost/p-exp/veto")[0] == 409
    propose(srv, "p-bad")
    assert req(srv, "POST", "/v1/ghost/p-bad/accept", json={"by": 5})[0] == 400


def test_a_cut_naming_the_proposal_marks_it_executed(srv):
    import orjson

    from .test_serve import RawDevice

    async def main():
        async with aiohttp.ClientSession(headers=AUTH) as http:
            devs = [RawDevice(srv, http, f"dev-{i}") for i in (1, 2)]
            for d in devs:
                await d.connect()
            await apropose(srv, "p-cut", to="cam-2")
            assert (await _req(srv, "POST", "/v1/ghost/p-cut/accept"))[0] == 200
            async with http.post(srv.url + "/v1/director/cut", json={"to": "cam-2", "by": "ghost", "proposal": "p-cut"}) as r:
                assert r.status == 200
            status, _h, body = await _req(srv, "GET", "/v1/ghost")
            ghost = orjson.loads(body)
            assert ghost["pending"] is None and ghost["recent"][-1]["status"] == "executed"
            for d in devs:
                await d.close()

    asyncio.run(main())


def test_state_carries_the_music_cue_and_the_server_clock(srv):
    import orjson

    req(srv, "POST", "/v1/events", json={"type": "music.cue", "data": {"track": "a" * 64, "title": "Song", "started_at": 1.0, "offset_s": 0}})
    status, _h, body = req(srv, "GET", "/v1/state")
    state = orjson.loads(body)
    assert state["music"]["title"] == "Song" and abs(state["now"] - time.time()) < 60


@pytest.mark.parametrize(("zoom", "fov"), [(0.5, 120.0), (1, 70.0), (2, 40.0), (None, 70.0), (0.25, 120.0)])
def test_fov_per_lens(zoom, fov):
    assert horizontal_fov_deg(zoom) == pytest.approx(fov)


def test_fov_between_lenses_and_the_devices_own_figure():
    assert 70 < horizontal_fov_deg(0.7) < 120 and 40 < horizontal_fov_deg(1.5) < 70 and horizontal_fov_deg(3) < 40
    assert horizontal_fov_deg(1, 63.5) == 63.5


def test_coverage_arcs_from_the_fov_model():
    cov = compute_coverage([("a", {"azimuth_deg": 0}), ("b", {"azimuth_deg": 90}), ("c", {"azimuth_deg": 100}), ("d", {})],
                           zooms={"a": 0.5, "b": 1, "c": 2})  # fmt: skip
    arcs = {a["camera"]: a for a in cov["arcs"]}
    assert arcs["a"]["start_deg"] == -60 and arcs["a"]["end_deg"] == 60 and arcs["a"]["fov_deg"] == 120
    assert arcs["b"]["start_deg"] == 55 and arcs["b"]["end_deg"] == 125
    # a (-60..60) and b+c (55..125) merge into one covered arc -60..125
    assert cov["covered_arcs"] == [{"start_deg": -60.0, "end_deg": 125.0, "width_deg": 185.0, "center_deg": 32.5}]
    assert cov["uncovered_arcs"] == [{"start_deg": 125.0, "end_deg": -60.0, "width_deg": 175.0, "center_deg": -147.5}]
    assert cov["largest_uncovered"]["width_deg"] == 175 and cov["covered_deg"] == 185
    assert cov["unplaced"] == ["d"] and cov["duplicates"][0]["cameras"] == ["b", "c"]
    assert "120" in cov["fov_model"]


def test_coverage_wrapping_and_full_circle():
    cov = compute_coverage([("a", {"azimuth_deg": 170}), ("b", {"azimuth_deg": -170})])
    assert cov["covered_arcs"] == [{"start_deg": 135.0, "end_deg": -135.0, "width_deg": 90.0, "center_deg": -180.0}]
    full = compute_coverage([(f"c{i}", {"azimuth_deg": i * 60}) for i in range(6)], zooms={f"c{i}": 0.5 for i in range(6)})
    assert full["uncovered_arcs"] == [] and full["largest_uncovered"] is None and full["covered_deg"] == 360
    none = compute_coverage([])
    assert none["uncovered_arcs"][0]["width_deg"] == 360 and none["arcs"] == []


def test_serve_prints_the_console_url_with_a_generated_token(tmp_path):
    import subprocess

    from .conftest import MMX, free_port

    port = free_port()
    proc = subprocess.Popen([*MMX, "serve", "--port", str(port), "--data", str(tmp_path / "d"), "--no-record"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**__import__("os").environ, "MMX_TOKEN": ""})  # fmt: skip
    try:
        lines = [proc.stderr.readline().decode().strip() for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(15)
    token = next(ln.split(": ", 1)[1] for ln in lines if ln.startswith("token: "))
    assert f"console: http://127.0.0.1:{port}/?token={token}" in lines
