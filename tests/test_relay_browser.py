"""mmx relay with a real headless Chromium (Debian chromium + chromium-driver, via selenium).

(1) the viewer page at / decodes the hero feed and sees a cut; (2) the /publish page
publishes Chromium's fake camera into the relay and a Python viewer receives its frames.
The relay runs as a real `mmx relay` subprocess; all ICE stays on 127.0.0.1. Skipped only
when chromium or chromedriver is absent.
"""

from __future__ import annotations

import asyncio
import threading
import time

from mmx.events import Producer, encode
from mmx.relay.client import whep_subscribe, whip_publish
from mmx.relay.pattern import SLATE_SOURCE, pattern_track, read_frame

from .relay_fixtures import BROWSER_MARKS, TOKEN, browser, relay_proc, wait_for  # noqa: F401 - fixtures

pytestmark = BROWSER_MARKS


def cut(stdin, producer: Producer, frm: str | None, to: str) -> None:
    stdin.write(encode(producer.make("director.cut", {"from": frm, "to": to, "by": "operator"})))
    stdin.flush()


def test_viewer_page_plays_the_hero_feed_and_sees_a_cut(relay_proc, browser):
    base, stdin = relay_proc
    producer = Producer("operator")
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def publish():
        pubs = [await whip_publish(f"{base}/whip/cam-{i}", pattern_track(640, 360, source=i), token=TOKEN)
                for i in (1, 2)]
        ready.set()
        await stop.wait()
        for pub in pubs:
            await pub.close()

    ready = threading.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(publish()), daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "publishers did not connect"
        cut(stdin, producer, None, "cam-1")
        browser.get(f"{base}/?token={TOKEN}")
        wait_for(browser, "return window.mmx && window.mmx.state === 'connected'", timeout_s=30, what="WHEP connected")
        wait_for(browser, "return window.mmx.source === 1 && window.mmx.camera === 'cam-1'", timeout_s=30,
                 what="cam-1 decoded on the page")
        frames_before = browser.execute_script("return window.mmx.framesShown")
        cut(stdin, producer, "cam-1", "cam-2")
        wait_for(browser, "return window.mmx.source === 2 && window.mmx.camera === 'cam-2'", timeout_s=30,
                 what="the cut to cam-2 on the page")
        state = browser.execute_script("return {seen: window.mmx.sourcesSeen, shown: window.mmx.framesShown,"
                                       " latency: window.mmx.latencyMs, kind: window.mmx.latencySource}")
        assert state["shown"] > frames_before
        assert state["seen"][-2:] == [1, 2]
        assert state["kind"] == "pixel timestamp" and 0 <= state["latency"] < 5000
        # the HUD is refreshed twice a second
        wait_for(browser, "return document.getElementById('camera').textContent.startsWith('cam-2')"
                 " && document.getElementById('latency').textContent.endsWith(' ms (pixel timestamp)')",
                 timeout_s=10, what="the HUD showing cam-2 and the pixel latency")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)


def test_publish_page_sends_chromiums_fake_camera_into_the_relay(relay_proc, browser):
    base, stdin = relay_proc
    cut(stdin, Producer("operator"), None, "phone-1")
    browser.get(f"{base}/publish/phone-1?token={TOKEN}&autostart=1")
    wait_for(browser, "return window.mmx && window.mmx.state === 'connected'", timeout_s=30, what="WHIP connected")

    async def view():
        pc, track = await whep_subscribe(f"{base}/whep/phone-1", token=TOKEN)
        sizes, start = [], time.monotonic()
        try:
            while len(sizes) < 30 and time.monotonic() - start < 30:
                frame = await asyncio.wait_for(track.recv(), 10)
                stamp = read_frame(frame)
                if stamp is None or stamp.source != SLATE_SOURCE:  # camera frames, not the slate
                    sizes.append((frame.width, frame.height))
            # the same camera on the hero feed (the program was cut to it)
            pc2, hero = await whep_subscribe(f"{base}/whep/hero", token=TOKEN)
            hero_frame = await asyncio.wait_for(hero.recv(), 10)
            await pc2.close()
        finally:
            await pc.close()
        return sizes, time.monotonic() - start, (hero_frame.width, hero_frame.height)

    sizes, elapsed, hero_size = asyncio.run(view())
    assert len(sizes) == 30, f"only {len(sizes)} frames in {elapsed:.1f} s"
    width, height = sizes[-1]
    assert width >= 320 and height >= 180
    assert hero_size == sizes[-1]
    # the viewer page in a second tab: no stamp in the fake camera's pixels, so the latency
    # shown is the estimate from getStats plus the relay's own hold time
    browser.switch_to.new_window("tab")
    browser.get(f"{base}/?token={TOKEN}")
    wait_for(browser, "return window.mmx && window.mmx.camera === 'phone-1' && window.mmx.latencyMs !== null"
             " && window.mmx.framesDecoded > 10", timeout_s=30, what="the fake camera on the viewer page")
    state = browser.execute_script("return {kind: window.mmx.latencySource, latency: window.mmx.latencyMs}")
    assert state["kind"].startswith("estimate") and 0 <= state["latency"] < 5000
    wait_for(browser, "return document.getElementById('camera').textContent === 'phone-1'", timeout_s=10,
             what="the HUD showing phone-1")
