"""Fixtures shared by the relay's browser tests: `mmx relay --events -`, headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from .conftest import MMX

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "browser-token"
#: Marks for a module of browser tests (skipped when Debian's chromium is absent).
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="Debian chromium / chromium-driver not installed"),
]


def browser_test(fn):
    """Mark one test as a browser test (skipped when Debian's chromium is absent)."""
    for mark in BROWSER_MARKS:
        fn = mark(fn)
    return fn


@pytest.fixture
def relay_proc(port):
    """`mmx relay --events -` on a free port; yields (base_url, stdin)."""
    proc = subprocess.Popen([*MMX, "relay", "--port", str(port), "--token", TOKEN, "--events", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = proc.stderr.readline().decode()
    assert "listening on" in line, line
    # keep draining stderr so the relay never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}", proc.stdin
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--allow-loopback-in-peer-connection",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                 "--autoplay-policy=no-user-gesture-required",
                 "--disable-features=WebRtcHideLocalIpsWithMdns",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, *, timeout_s: float, what: str):
    """Poll ``script`` (JS returning a value) until truthy; fails with the page state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    state = driver.execute_script("return JSON.stringify(Object.assign({}, window.mmx || {}, {pc: undefined}))")
    pytest.fail(f"timed out waiting for {what}; page state: {state}")
