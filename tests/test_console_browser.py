"""The operator console in Debian's headless Chromium (selenium), against a real `mmx serve`
subprocess with three `mmx device` cameras on loopback (test pattern previews and generated
pose: A and C stand still, B dances), and for the ghost tests a real `mmx ghost`.

One server and one browser for the whole module; the tests run in file order and build on
each other's state (the login of the first, the cameras of the fixture). Skipped only when
chromium or chromedriver is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from mmx.ghost.simulate import beat_grid_npz

from .conftest import MMX, ROOT, free_port
from .test_ghost_live import write_pose

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "console-test-token"
TRACK = "c" * 64
SCREENSHOT = ROOT / "docs" / "console.png"

pytestmark = [
    pytest.mark.browser, pytest.mark.slow,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="Debian chromium / chromium-driver not installed"),
]  # fmt: skip


def wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Shoot:
    """mmx serve (restartable on the same port and data) plus three mmx device cameras."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        self.serve: subprocess.Popen | None = None
        self.devices: dict[str, subprocess.Popen] = {}
        self.start_serve()

    def start_serve(self) -> None:
        self.serve = subprocess.Popen([*MMX, "serve", "--port", str(self.port), "--token", TOKEN, "--data", str(self.tmp / "serve"),
                                       "--events", str(self.tmp / "serve-events.jsonl"), "--device-timeout", "1.5", "--no-record"],
                                      stdout=subprocess.DEVNULL, stderr=open(self.tmp / "serve.err", "ab"))  # fmt: skip

        def up():
            assert self.serve.poll() is None, (self.tmp / "serve.err").read_text()
            try:
                return self.http.get("/v1/state").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 30, "mmx serve to answer")

    def stop_serve(self) -> None:
        stop(self.serve)

    def start_device(self, name: str, pose: Path, placement: str) -> None:
        self.devices[name] = subprocess.Popen(
            [*MMX, "device", "--server", self.url, "--token", TOKEN, "--name", name, "--pose", str(pose), "--fps", "5",
             "--size", "320x180", "--state-dir", str(self.tmp / "devices"), "--placement", placement],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"device-{name}.err", "ab"))  # fmt: skip

    def state(self) -> dict:
        return self.http.get("/v1/state").json()

    def camera_of(self, name: str) -> str:
        return next(c["camera"] for c in self.state()["cameras"] if c["name"] == name)

    def events(self, types: str) -> list[dict]:
        r = self.http.get("/v1/events", params={"since": 0, "types": types, "follow": 0})
        r.raise_for_status()
        return [json.loads(line) for line in r.text.splitlines() if line.strip()]

    def post(self, path: str, body: dict | None = None) -> httpx.Response:
        return self.http.post(path, json=body or {})

    def close(self) -> None:
        for proc in self.devices.values():
            stop(proc)
        stop(self.serve)
        self.http.close()


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def shoot(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    os.environ.setdefault("MMX_HOME", str(tmp / "mmx-home"))
    s = Shoot(tmp)
    still = write_pose(tmp / "still.pose.jsonl", motion=0.0)
    dance = write_pose(tmp / "dance.pose.jsonl", motion=1.0)
    for name, pose, placement in (("A", still, "label=front-left,azimuth_deg=-50,distance_m=3"),
                                  ("B", dance, "label=front,azimuth_deg=10,distance_m=4"),
                                  ("C", still, "label=right,azimuth_deg=100,distance_m=2.5")):  # fmt: skip
        s.start_device(name, pose, placement)
        # one at a time, so the camera ids follow the names (cam-1 = A, cam-2 = B, cam-3 = C)
        wait_for(lambda n=name: any(c["name"] == n and c["status"] == "live" for c in s.state()["cameras"]), 30, f"{name} live")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def wait_js(driver, script: str, timeout_s: float, what: str):
    try:
        return wait_for(lambda: js(driver, script), timeout_s, what)
    except AssertionError:
        page = js(driver, "return JSON.stringify({conn: document.querySelector('#connection').dataset.state,"
                          " text: document.querySelector('#connection-text').textContent,"
                          " banner: document.querySelector('#ghost-banner').dataset, toast: document.querySelector('#toast').textContent,"
                          " tiles: [...document.querySelectorAll('#multiview [data-camera]')].map(t => ({...t.dataset}))})")  # fmt: skip
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; page: {page}") from None


def press(driver, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def banner(driver) -> dict:
    return js(driver, "return {...document.querySelector('#ghost-banner').dataset}")


def test_a_wrong_token_says_so_and_the_form_logs_in(shoot, browser):
    browser.get(f"{shoot.url}/?token=not-the-token")
    wait_js(browser, "return !document.querySelector('#login').hidden", 10, "the login form")
    message = wait_js(browser, "return document.querySelector('#login-error').textContent", 10, "the wrong-token message")
    assert "Wrong token" in message
    assert js(browser, "return location.search") == ""  # nothing left in the address bar
    browser.find_element("css selector", "#login-token").send_keys("still wrong")
    browser.find_element("css selector", '[data-action="login"]').click()
    wait_js(browser, "return document.querySelector('#login-error').textContent.includes('Wrong token')", 10, "wrong token again")
    token = browser.find_element("css selector", "#login-token")
    token.clear()
    token.send_keys(TOKEN)
    browser.find_element("css selector", '[data-action="login"]').click()
    wait_js(browser, "return document.querySelector('#login').hidden", 10, "the console")
    wait_js(browser, "return document.querySelector('#connection').dataset.state === 'live'", 15, "live connection")
    cookie = browser.get_cookie("mmx_session")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    # the token link logs in too (the URL mmx serve prints)
    browser.delete_all_cookies()
    browser.get(f"{shoot.url}/?token={TOKEN}")
    wait_js(browser, "return document.querySelector('#connection').dataset.state === 'live'", 15, "live after the token link")
    assert js(browser, "return location.pathname + location.search") == "/"


def test_tiles_show_live_pictures_that_keep_updating(shoot, browser):
    wait_js(browser, "return document.querySelectorAll('#multiview [data-camera][data-status=live]').length === 3", 15, "three live tiles")
    order = js(browser, "return [...document.querySelectorAll('#multiview [data-camera]')].map(t => t.dataset.camera)")
    assert order == ["cam-1", "cam-2", "cam-3"]
    for tile in order:
        assert js(browser, f"return document.querySelector('[data-camera=\"{tile}\"] [data-action=cut]') !== null")
    before = js(browser, "return Object.fromEntries([...document.querySelectorAll('#multiview [data-camera]')].map(t => [t.dataset.camera, +t.dataset.frames]))")
    wait_js(browser, "const b = arguments[0]; return [...document.querySelectorAll('#multiview [data-camera]')]"
                     ".every(t => +t.dataset.frames >= (b[t.dataset.camera] || 0) + 3)".replace("arguments[0]", json.dumps(before)),
            15, "every tile to draw 3 more frames")  # fmt: skip
    # the picture is really there: the canvas holds the device's frame size, not blank
    size = js(browser, "const c = document.querySelector('[data-camera=\"cam-1\"] canvas'); return [c.width, c.height]")
    assert size == [320, 180]
    assert js(browser, "return document.querySelector('[data-camera=\"cam-2\"] [data-field=placement]').textContent") == "front 10°"
    marks = js(browser, "return [...document.querySelectorAll('#coverage svg [data-camera]')].map(m => m.dataset.camera).sort()")
    assert marks == ["cam-1", "cam-2", "cam-3"]


def test_key_2_cuts_to_the_second_tile_and_h_holds(shoot, browser):
    press(browser, "2")
    wait_for(lambda: shoot.state()["program"] == "cam-2", 5, "program cam-2")
    wait_js(browser, "return document.querySelector('[data-camera=\"cam-2\"]').dataset.program === 'true'", 5, "red tally on cam-2")
    assert js(browser, "return document.querySelector('#program').dataset.program") == "cam-2"
    cut = [e for e in shoot.events("director.cut") if e["data"]["to"] == "cam-2"][-1]
    assert cut["data"]["by"] == "operator"
    press(browser, "h")
    wait_for(lambda: shoot.state()["hold"] == "cam-2", 5, "hold on cam-2")
    wait_js(browser, "return document.querySelector('#hold').dataset.hold === 'cam-2'", 5, "hold shown")
    press(browser, "1")  # held: the server refuses, the page says why
    wait_js(browser, "return !document.querySelector('#toast').hidden && document.querySelector('#toast').textContent.includes('held')", 5, "the refusal")
    assert shoot.state()["program"] == "cam-2"
    press(browser, "h")
    wait_for(lambda: shoot.state()["hold"] is None, 5, "released")
    browser.find_element("css selector", '[data-camera="cam-1"] [data-action="cut"]').click()
    wait_for(lambda: shoot.state()["program"] == "cam-1", 5, "program cam-1 by click")


def _propose(shoot, pid: str, to: str, *, cut_in_s: float = 30.0) -> None:
    now = time.time()
    reasons = [{"feature": "gain", "value": 0.31, "text": f"{to} scores 0.83, 0.31 above program cam-1 (0.52; needed 0.15)"},
               {"feature": "presence", "camera": to, "value": 0.95, "weight": 1.0, "contribution": 0.95,
                "text": f"{to} sees 18 of 19 joints (presence 0.95 × weight 1 = +0.95)"},
               {"feature": "motion", "camera": to, "value": 0.6, "weight": 0.8, "contribution": 0.48,
                "text": f"{to} subject moving 1.2 body-lengths/s (motion 0.60 × weight 0.8 = +0.48)"},
               {"feature": "timing", "clock": "beat", "lead_s": 1.0, "downbeat": True, "text": "on the next downbeat"}]  # fmt: skip
    r = shoot.post("/v1/events", {"type": "ghost.proposed", "src": "ghost",
                                  "data": {"proposal": pid, "from": "cam-1", "to": to, "score": 0.83, "reasons": reasons,
                                           "cut_at": now + cut_in_s, "expires_at": now + cut_in_s + 10}})  # fmt: skip
    assert r.status_code == 202, r.text


def test_a_posted_proposal_shows_in_the_banner_enter_accepts_esc_vetoes(shoot, browser):
    _propose(shoot, "prop-accept", "cam-3")
    wait_js(browser, "return document.querySelector('#ghost-banner').dataset.proposal === 'prop-accept'", 10, "the banner")
    wait_js(browser, "return document.querySelector('[data-camera=\"cam-3\"]').dataset.proposed === 'true'", 5, "green tally on cam-3")
    headline = js(browser, "return document.querySelector('#ghost-headline').textContent")
    assert "cam-1 → cam-3" in headline and "0.83" in headline
    reasons = js(browser, "return [...document.querySelectorAll('#ghost-reasons li')].map(l => l.textContent)")
    assert reasons[:2] == ["cam-3 scores 0.83, 0.31 above program cam-1", "cam-3 sees 18 of 19 joints"]
    timer = js(browser, "return document.querySelector('#ghost-timer').textContent")
    assert timer.endswith(" s") and 20 < float(timer.split()[0]) <= 30
    # the screenshot of docs/console.png: 1280×800, three cameras, a pending proposal
    js(browser, "document.querySelector('#toast').hidden = true")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert browser.get_screenshot_as_file(str(SCREENSHOT))
    press(browser, "\ue007")  # Enter
    wait_for(lambda: [e for e in shoot.events("ghost.accepted") if e["data"]["proposal"] == "prop-accept"], 5, "ghost.accepted")
    accepted = [e for e in shoot.events("ghost.accepted") if e["data"]["proposal"] == "prop-accept"]
    assert len(accepted) == 1 and accepted[0]["data"]["by"] == "operator" and accepted[0]["src"] == "operator"
    # manual mode: the accept is recorded and the proposal leaves with that outcome (no cut)
    wait_js(browser, "const b = document.querySelector('#ghost-banner').dataset; return b.proposal === '' && b.outcome === 'accepted'", 5,
            "accepted outcome")  # fmt: skip
    assert "manual mode" in js(browser, "return document.querySelector('#ghost-headline').textContent")

    _propose(shoot, "prop-expire", "cam-2")
    wait_js(browser, "return document.querySelector('#ghost-banner').dataset.proposal === 'prop-expire'", 10, "the next proposal")
    shoot.post("/v1/events", {"type": "ghost.expired", "src": "ghost", "data": {"proposal": "prop-expire", "by": "ghost", "reason": "superseded"}})
    wait_js(browser, "const b = document.querySelector('#ghost-banner').dataset; return b.proposal === '' && b.outcome === 'expired'", 5, "expired outcome")

    _propose(shoot, "prop-veto", "cam-2")
    wait_js(browser, "return document.querySelector('#ghost-banner').dataset.proposal === 'prop-veto'", 10, "the second proposal")
    press(browser, "\ue00c")  # Escape
    wait_for(lambda: [e for e in shoot.events("ghost.vetoed") if e["data"]["proposal"] == "prop-veto"], 5, "ghost.vetoed")
    wait_js(browser, "const b = document.querySelector('#ghost-banner').dataset; return b.proposal === '' && b.outcome === 'vetoed'", 5, "vetoed outcome")
    assert "Vetoed by operator" in js(browser, "return document.querySelector('#ghost-headline').textContent")
    assert not [e for e in shoot.events("ghost.accepted") if e["data"]["proposal"] == "prop-veto"]


def test_a_running_ghost_accept_cuts_at_cut_at_and_veto_cuts_nothing(shoot, browser):
    feats = shoot.tmp / "features"
    feats.mkdir(exist_ok=True)
    beat_grid_npz(feats / f"generated-{TRACK[:12]}.npz", track=TRACK, bpm=120.0, duration_s=600.0)
    policy = shoot.tmp / "quick.toml"
    policy.write_text("[rules]\nmin_shot_s = 1.5\nmax_shot_s = 6.0\n")
    shoot.post("/v1/director/mode", {"mode": "ghost"}).raise_for_status()
    shoot.post("/v1/director/cut", {"to": "cam-1"}).raise_for_status()
    shoot.post("/v1/events", {"type": "music.cue", "src": "operator",
                              "data": {"track": TRACK, "title": "generated", "started_at": time.time() + 0.2, "offset_s": 0.0}}).raise_for_status()  # fmt: skip
    err = shoot.tmp / "ghost.err"
    ghost = subprocess.Popen([*MMX, "ghost", "--server", shoot.url, "--token", TOKEN, "--features", str(feats), "--policy", str(policy)],
                             stdout=subprocess.DEVNULL, stderr=open(err, "wb"))  # fmt: skip
    try:
        known = {e["data"]["proposal"] for e in shoot.events("ghost.proposed")}
        pid = wait_js(browser, "const p = document.querySelector('#ghost-banner').dataset.proposal;"
                               f" return p && !{json.dumps(sorted(known))}.includes(p) && p", 40, "the ghost's proposal")  # fmt: skip
        proposed = next(e for e in shoot.events("ghost.proposed") if e["data"]["proposal"] == pid)
        assert proposed["src"] == "ghost" and proposed["data"]["to"] == "cam-2"  # B dances
        press(browser, "\ue007")
        cut = wait_for(lambda: [e for e in shoot.events("director.cut") if e["data"].get("proposal") == pid], 20, "the ghost's cut")[0]
        assert cut["data"]["by"] == "ghost" and cut["data"]["to"] == "cam-2"
        accepted = next(e for e in shoot.events("ghost.accepted") if e["data"]["proposal"] == pid)
        cut_at = proposed["data"]["cut_at"]
        if accepted["ts"] <= cut_at:
            assert abs(cut["ts"] - cut_at) < 0.25, (cut["ts"] - cut_at, err.read_text())
        else:  # accepted after its beat on a loaded machine: executed at once, the next cut after it
            between = [e for e in shoot.events("director.cut") if accepted["seq"] < e["seq"] < cut["seq"]]
            assert accepted["seq"] < cut["seq"] and cut["ts"] >= accepted["ts"] and between == []
        wait_js(browser, "return document.querySelector('#ghost-banner').dataset.outcome === 'executed'", 5, "executed outcome")
        wait_js(browser, "return document.querySelector('[data-camera=\"cam-2\"]').dataset.program === 'true'", 5, "tally follows")

        pid2 = wait_js(browser, f"const p = document.querySelector('#ghost-banner').dataset.proposal; return p && p !== {json.dumps(pid)} && p",
                       40, "a second proposal")  # fmt: skip
        second = next(e for e in shoot.events("ghost.proposed") if e["data"]["proposal"] == pid2)
        press(browser, "\ue00c")
        wait_for(lambda: [e for e in shoot.events("ghost.vetoed") if e["data"]["proposal"] == pid2], 5, "the veto")
        # nothing is cut for it, up to past its cut_at
        wait_for(lambda: time.time() > second["data"]["cut_at"] + 1.0, 30, "its cut_at to pass", step_s=0.2)
        assert not [e for e in shoot.events("director.cut") if e["data"].get("proposal") == pid2]
    finally:
        stop(ghost)
        shoot.post("/v1/director/mode", {"mode": "manual"})


def test_dragging_a_camera_in_the_coverage_map_changes_its_placement(shoot, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    before = next(c for c in shoot.state()["cameras"] if c["camera"] == "cam-3")["placement"]
    mark = browser.find_element("css selector", '#coverage svg [data-camera="cam-3"]')
    svg = browser.find_element("css selector", "#coverage svg")
    # drop it straight below the subject: azimuth 0 (head-on)
    rect = js(browser, "const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", svg)
    ActionChains(browser).click_and_hold(mark).move_to_element_with_offset(svg, 0, int(rect[1] * 0.2)) \
        .move_to_element_with_offset(svg, 0, int(rect[1] * 0.3)).release().perform()
    after = wait_for(lambda: (lambda p: p if p.get("azimuth_deg") != before.get("azimuth_deg") else None)(
        next(c for c in shoot.state()["cameras"] if c["camera"] == "cam-3")["placement"]), 5, "the new placement")
    assert abs(after["azimuth_deg"]) < 5 and after["label"] == "right" and after["distance_m"] > 0
    # the event reaches the journal after the state changed: wait for it, do not race it
    wait_for(lambda: [e for e in shoot.events("camera.changed") if e["data"]["camera"] == "cam-3" and "placement" in e["data"]],
             10, "the camera.changed event of the new placement")
    cov = shoot.http.get("/v1/coverage").json()
    assert next(a for a in cov["arcs"] if a["camera"] == "cam-3")["center_deg"] == pytest.approx(after["azimuth_deg"])


def test_a_killed_device_turns_lost_and_a_cut_to_it_is_refused(shoot, browser):
    shoot.devices["C"].send_signal(signal.SIGKILL)
    shoot.devices["C"].wait(5)
    wait_js(browser, "return document.querySelector('[data-camera=\"cam-3\"]').dataset.status === 'lost'", 10, "cam-3 lost")
    program = shoot.state()["program"]
    press(browser, "3")
    wait_js(browser, "const t = document.querySelector('#toast'); return !t.hidden && t.textContent.includes('not connected')", 5, "the refusal")
    assert shoot.state()["program"] == program
    # the tile shows it at the next animation frame (the console renders once per frame)
    wait_js(browser, "return document.querySelector('[data-camera=\"cam-3\"] [data-field=result]').textContent"
                     ".includes('cut refused')", 5, "the refusal on the tile")


def test_the_console_recovers_by_itself_across_a_serve_restart(shoot, browser):
    shoot.stop_serve()
    wait_js(browser, "return document.querySelector('#connection').dataset.state === 'reconnecting'", 10, "reconnecting shown")
    shoot.start_serve()
    wait_js(browser, "return document.querySelector('#connection').dataset.state === 'live'", 20, "live again")
    wait_for(lambda: len([c for c in shoot.state()["cameras"] if c["status"] == "live"]) == 2, 20, "A and B back")
    shoot.post("/v1/director/cut", {"to": "cam-1"}).raise_for_status()
    shoot.post("/v1/director/cut", {"to": "cam-2"}).raise_for_status()
    wait_js(browser, "return document.querySelector('#program').dataset.program === 'cam-2'", 10, "the new server's cut")
    wait_js(browser, "return document.querySelectorAll('#multiview [data-camera][data-status=live]').length === 2", 15, "tiles live again")
    assert js(browser, "return performance.getEntriesByType('navigation').length") == 1  # never reloaded
