"""The camera page (`GET /camera`) in Debian's headless Chromium with its fake camera, against
a real `mmx serve` and `mmx relay` on loopback (issue 12).

The page joins through a pairing's camera link (``/camera#token=…``), the way a phone scans
the QR code. One relay, one server (restarted on the same data directory by one test) and
one browser for the whole module; the tests run in file order and build on each other.
Skipped only when chromium or chromedriver is absent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from .conftest import MMX, ROOT, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "camera-page-operator"
RELAY_TOKEN = "camera-page-relay"
SCREENSHOT = ROOT / "docs" / "camera.png"

pytestmark = [
    pytest.mark.browser, pytest.mark.slow,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="Debian chromium / chromium-driver not installed"),
]  # fmt: skip

BROWSER_FLAGS = ("--headless", "--no-sandbox", "--allow-loopback-in-peer-connection",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream=device-count=2",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage", "--window-size=960,640",
                 "--autoplay-policy=no-user-gesture-required", "--disable-features=WebRtcHideLocalIpsWithMdns",
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows")  # fmt: skip


def wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def chromium(profile: Path, *extra: str):
    """A headless Debian Chromium driven by selenium, with the fake camera."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*BROWSER_FLAGS, *extra, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    return driver


class Studio:
    """mmx relay + mmx serve --relay (restartable on the same port and data directory)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.relay_port = free_port()
        self.relay_url = f"http://127.0.0.1:{self.relay_port}"
        self.relay = subprocess.Popen([*MMX, "relay", "--port", str(self.relay_port), "--token", RELAY_TOKEN],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        line = self.relay.stderr.readline().decode()
        assert "listening on" in line, line
        threading.Thread(target=lambda: [None for _ in self.relay.stderr], daemon=True).start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tmp / "serve"
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        self.serve: subprocess.Popen | None = None
        self.start_serve()

    def start_serve(self) -> None:
        self.serve = subprocess.Popen(
            [*MMX, "serve", "--port", str(self.port), "--token", TOKEN, "--data", str(self.data), "--no-qr",
             "--events", str(self.tmp / "serve-events.jsonl"), "--device-timeout", "2", "--no-record",
             "--relay", self.relay_url, "--relay-token", RELAY_TOKEN],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "serve.err", "ab"))  # fmt: skip

        def up():
            assert self.serve.poll() is None, (self.tmp / "serve.err").read_text()
            try:
                return self.http.get("/v1/state").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 30, "mmx serve to answer")

    def state(self) -> dict:
        return self.http.get("/v1/state").json()

    def live_cameras(self) -> list[dict]:
        return [c for c in self.state()["cameras"] if c.get("status") == "live"]

    def events(self, types: str) -> list[dict]:
        r = self.http.get("/v1/events", params={"since": 0, "types": types, "follow": 0})
        r.raise_for_status()
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def close(self) -> None:
        stop(self.serve)
        stop(self.relay)
        self.http.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    s = Studio(tmp_path_factory.mktemp("camera-page"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def pairing(studio):
    r = studio.http.post("/v1/pairings", json={"name": "browser test"})
    assert r.status_code in (200, 201), r.text
    return r.json()


@pytest.fixture(scope="module")
def page(studio, pairing, tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium") / "profile")
    try:
        assert "#token=" in pairing["url"] and "?token" not in pairing["url"]
        driver.get(pairing["url"])
        yield driver
    finally:
        driver.quit()


def page_camera(studio) -> dict:
    return wait_for(lambda: next((c for c in studio.live_cameras() if (c.get("app") or "").startswith("mmx-camera-page")
                                  or (c.get("model") or "").startswith("Chrome")), None), 30, "the page to turn live")


def test_the_page_joins_as_a_live_camera_with_previews(studio, page):
    cam = page_camera(studio)
    assert cam["camera"].startswith("cam-")
    assert page.execute_script("return window.mmxCamera.camera") == cam["camera"]

    def preview():
        r = studio.http.get(f"/v1/cameras/{cam['camera']}/preview.jpg")
        return r.content if r.status_code == 200 and r.content[:2] == b"\xff\xd8" else None

    jpeg = wait_for(preview, 30, "a preview frame")
    assert len(jpeg) > 1000
    device_id = page.execute_script("return localStorage.getItem('mmx.device')")
    assert device_id and device_id.startswith("web-")


def test_a_still_lands_with_its_sha256_and_an_event(studio, page):
    cam = page_camera(studio)["camera"]
    r = studio.http.post(f"/v1/cameras/{cam}/still", json={}, timeout=30)
    assert r.status_code == 200, r.text
    still = r.json()
    path = studio.data / still["path"] if not Path(still["path"]).is_absolute() else Path(still["path"])
    if not path.exists():
        path = next(studio.data.rglob(f"{still['still']}.jpg"))
    data = path.read_bytes()
    assert data[:2] == b"\xff\xd8"
    assert hashlib.sha256(data).hexdigest() == still["sha256"]
    captured = wait_for(lambda: [e for e in studio.events("still.captured") if e["data"]["still"] == still["still"]],
                        10, "still.captured")  # fmt: skip
    assert captured[0]["data"]["sha256"] == still["sha256"]


def test_a_zoom_the_camera_lacks_is_422_and_one_it_has_is_applied(studio, page):
    cam = page_camera(studio)
    r = studio.http.post(f"/v1/cameras/{cam['camera']}/zoom", json={"zoom": 0.5})
    assert r.status_code == 422, r.text
    lenses = page.execute_script("return window.mmxCamera.capture.lenses[window.mmxCamera.capture.facing]")
    if max(lenses) >= 2:  # Chromium's fake camera has a PTZ zoom of 100-400 %: lenses [1, 4]
        r = studio.http.post(f"/v1/cameras/{cam['camera']}/zoom", json={"zoom": 2})
        assert r.status_code == 200, r.text
        assert r.json()["zoom"] == 2
        assert page.execute_script("return window.mmxCamera.capture.zoom") == 2


def test_flip_opens_the_other_camera(studio, page):
    cam = page_camera(studio)
    # Chromium's fake capture has two cameras here (device-count=2) and no facing modes: the page
    # calls the first "back", the other "front"; serve refuses a flip of a one-facing camera (422)
    first = page.execute_script("return window.mmxCamera.capture.track.getSettings().deviceId")
    r = studio.http.post(f"/v1/cameras/{cam['camera']}/flip", json={})
    assert r.status_code == 200, r.text
    assert r.json()["facing"] == "front"
    assert page.execute_script("return window.mmxCamera.capture.track.getSettings().deviceId") != first
    r = studio.http.post(f"/v1/cameras/{cam['camera']}/flip", json={})
    assert r.status_code == 200 and r.json()["facing"] == "back", r.text


def test_the_camera_token_is_403_outside_the_device_routes(studio, pairing, page):
    cam = page_camera(studio)["camera"]
    camera_http = httpx.Client(base_url=studio.url, headers={"Authorization": f"Bearer {pairing['token']}"}, timeout=10)
    with camera_http:
        assert camera_http.post("/v1/director/cut", json={"to": cam}).status_code == 403
        assert camera_http.get("/v1/state").status_code == 403


def test_a_ghost_proposal_shows_a_green_tally_until_it_is_vetoed(studio, page):
    cam = page_camera(studio)["camera"]
    frame = "return document.getElementById('frame').className"
    now = time.time()
    event = {"type": "ghost.proposed", "src": "ghost", "ts": now,
             "data": {"proposal": "p-camera-page", "to": cam, "from": None, "score": 0.8, "cut_at": now + 2, "expires_at": now + 60}}
    assert studio.http.post("/v1/events", json=event).status_code in (200, 201, 202)
    wait_for(lambda: page.execute_script(frame) == "tally-preview", 10, "the green tally")
    assert studio.http.post("/v1/ghost/p-camera-page/veto", json={}).status_code == 200
    wait_for(lambda: page.execute_script(frame) == "tally-none", 10, "the green tally to go")


def test_program_shows_a_red_tally_and_the_screenshot(studio, page):
    cam = page_camera(studio)["camera"]
    r = studio.http.put(f"/v1/cameras/{cam}/placement", json={"label": "front-left", "azimuth_deg": -40, "distance_m": 3})
    assert r.status_code == 200, r.text
    wait_for(lambda: page.execute_script("return document.getElementById('placement').textContent") == "front-left",
             10, "the placement label")  # fmt: skip
    r = studio.http.post("/v1/director/cut", json={"to": cam})
    assert r.status_code == 200, r.text
    wait_for(lambda: page.execute_script("return document.getElementById('frame').className") == "tally-program",
             10, "the red tally")  # fmt: skip
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.save_screenshot(str(SCREENSHOT))


def test_with_a_relay_a_whep_viewer_receives_the_page_video(studio, page):
    from mmx.relay.client import whep_subscribe

    cam = page_camera(studio)["camera"]
    wait_for(lambda: "connected" in (page.execute_script("return document.getElementById('relay').textContent") or ""),
             30, "the page's WHIP session")  # fmt: skip

    async def receive() -> tuple[int, int]:
        pc, track = await whep_subscribe(f"{studio.relay_url}/whep/{cam}", token=RELAY_TOKEN)
        try:
            frame = await asyncio.wait_for(track.recv(), 20)
            return frame.width, frame.height
        finally:
            await pc.close()

    width, height = asyncio.run(receive())
    assert width >= 320 and height >= 180


def test_a_reload_keeps_the_camera_id(studio, page):
    before = page_camera(studio)["camera"]
    page.refresh()
    wait_for(lambda: page.execute_script("return window.mmxCamera && window.mmxCamera.connected"), 30, "the page to rejoin")
    assert page.execute_script("return window.mmxCamera.camera") == before
    assert page_camera(studio)["camera"] == before


def test_server_away_the_page_rejoins_and_a_kept_still_is_uploaded_once(studio, page):
    cam = page_camera(studio)["camera"]
    stop(studio.serve)
    wait_for(lambda: not page.execute_script("return window.mmxCamera.connected"), 15, "the page to notice")
    page.find_element("tag name", "body").send_keys("s")  # a still taken while the server is away
    wait_for(lambda: page.execute_script("return window.mmxCamera.outbox.count()") == 1, 15, "the still kept in IndexedDB")
    still_id = page.execute_script("return window.mmxCamera.outbox.db.then(db => new Promise(r => { "
                                   "const q = db.transaction('stills').objectStore('stills').getAllKeys(); "
                                   "q.onsuccess = () => r(q.result[0]); }))")  # fmt: skip
    assert still_id
    studio.start_serve()
    wait_for(lambda: page.execute_script("return window.mmxCamera.connected"), 30, "the page to rejoin by itself")
    assert page.execute_script("return window.mmxCamera.camera") == cam
    wait_for(lambda: page.execute_script("return window.mmxCamera.outbox.count()") == 0, 30, "the kept still to upload")
    files = wait_for(lambda: list(studio.data.rglob(f"{still_id}.jpg")), 10, "the still's file")
    assert len(files) == 1
    captured = [e for e in studio.events("still.captured") if e["data"]["still"] == still_id]
    assert len(captured) == 1
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == captured[0]["data"]["sha256"]


def test_a_revoked_pairing_disconnects_the_page(studio, pairing, page):
    cam = page_camera(studio)["camera"]
    r = studio.http.delete(f"/v1/pairings/{pairing['id']}")
    assert r.status_code in (200, 204), r.text
    wait_for(lambda: not any(c["camera"] == cam for c in studio.live_cameras()), 10, "the camera to leave")
    wait_for(lambda: "revoked" in (page.execute_script("return document.getElementById('message').textContent") or ""),
             10, "the page to say the link was revoked")  # fmt: skip
