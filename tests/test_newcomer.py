"""What a newcomer met (issue 17): each regression test is named after the item it covers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from .conftest import MMX, ROOT, free_port
from .convex_fake import FakeConvex
from .test_convex_sync import KEY, acked_seq, cli, make_ledger, shoot_events
from .test_serve import AUTH, TOKEN, ServerThread, _get
from .test_serve import call


async def call_api(srv, method: str, path: str, body: dict | None = None):
    async with aiohttp.ClientSession() as http:
        return await call(http, srv, method, path, body)


@pytest.fixture
def fake(tmp_path):
    server = FakeConvex(tmp_path / "convex-state.sqlite", free_port(), key=KEY).start()
    yield server
    server.stop()


# -- ledger sync -l ------------------------------------------------------------------------


def test_issue17_newcomer_ledger_sync_takes_l_like_the_other_ledger_commands(tmp_path, fake):
    path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(20))
    result = cli("ledger", "sync", "--convex", fake.url, "-l", str(path), key=KEY)
    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["acked_seq"] == 20 and len(fake.event_ids()) == 20
    for command in ("push", "tail", "sessions", "show", "export", "sync"):
        help_text = cli("ledger", command, "--help").stdout
        assert re.search(r"--ledger\s*-l\b|-l,\s*--ledger", help_text), command


# -- ledger sync: a wrong key with nothing pending ---------------------------------------------


def test_issue17_newcomer_ledger_sync_with_a_wrong_key_and_nothing_pending_exits_69(tmp_path, fake):
    path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(5))
    assert cli("ledger", "sync", "--convex", fake.url, "-l", str(path), key=KEY).exit_code == 0  # all synced
    calls = len(fake.outcomes())
    result = cli("ledger", "sync", "--convex", fake.url, "-l", str(path), key="prod:test|wrong")
    assert result.exit_code == 69, result.stderr
    assert result.stdout == ""
    assert f"Error: Convex at {fake.url} refused the deploy key" in " ".join(result.stderr.split())
    assert fake.outcomes()[calls:] == ["auth"]  # one call, not retried
    assert acked_seq(path, fake) == 5
    # an empty ledger too: the key is checked although there is nothing to send at all
    empty = make_ledger(tmp_path / "empty.sqlite", [])
    assert cli("ledger", "sync", "--convex", fake.url, "-l", str(empty), key="prod:test|wrong").exit_code == 69
    ok = cli("ledger", "sync", "--convex", fake.url, "-l", str(empty), key=KEY)
    assert ok.exit_code == 0 and orjson.loads(ok.stdout)["sent"] == 0


# -- man pages: SEE ALSO ---------------------------------------------------------------------


def test_issue17_newcomer_see_also_is_one_comma_separated_list():
    pages = sorted((ROOT / "man").glob("*.1"))
    assert pages
    for page in pages:
        text = page.read_text()
        section = text.split(".SH SEE ALSO\n", 1)[1].split("\n.SH ", 1)[0].strip("\n").split("\n")
        items = [line for line in section if not line.startswith((".PP", ".RS", ".RE", ".nf", ".fi"))]
        assert items, page.name
        assert all(line.endswith(",") for line in items[:-1]) and not items[-1].endswith(","), (page.name, items)
        names = [m.group(1) for line in items if (m := re.match(r"\.BR (\S+) \(\d\)", line))]
        assert len(names) == len(set(names)), (page.name, "a page listed twice")
    sync = (ROOT / "man" / "mmx-ledger-sync.1").read_text()
    assert ".BR mmx-ledger-sessions (1),\nexamples/convex/README.md,\n.BR mmx (1)," in sync


# -- README: mmx on the PATH ---------------------------------------------------------------


def test_issue17_newcomer_readme_puts_mmx_on_the_path_before_using_it_bare():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    first = blocks[0]
    assert "pip install -e ." in first and ".venv/bin/mmx demo" in first and "\nmmx " not in "\n" + first
    # every later bare `mmx …` (in a code block or inline) comes after the activation
    activate = readme.index("source .venv/bin/activate")
    bare = [m.start() for m in re.finditer(r"(?:^|[`\s|&;(])mmx [a-z]", readme[readme.index(first) + len(first):], re.M)]
    assert bare, "the README uses mmx after its first command"
    assert activate < readme.index(first) + len(first) + bare[0] + 1
    assert readme.index(first) < activate


# -- camera ids that do not depend on start order ----------------------------------------------


def _start_device(srv, tmp_path, name: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*MMX, "device", "--server", srv.url, "--token", TOKEN, "--name", name, "--fps", "0",
                             "--state-dir", str(tmp_path / "devices"), "--max-retries", "0", "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _live(srv) -> dict[str, str]:
    return {c["name"]: c["camera"] for c in asyncio.run(_get(srv, "/v1/state"))["cameras"] if c["status"] == "live"}


def _wait(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.05)
    return value


def test_issue17_newcomer_camera_ids_do_not_depend_on_start_order(tmp_path):
    srv = ServerThread(tmp_path / "data", device_timeout_s=30.0, ack_timeout_s=30.0).start()
    procs = []
    try:
        # the rehearsal's three cameras, started together (in the opposite order of their ids)
        asked = {"right": "cam-3", "left": "cam-2", "front": "cam-1"}
        for name, camera in asked.items():
            lenses = ["--lenses", "0.5,1,2"] if name == "front" else ["--lenses", "1,2"]
            procs.append(_start_device(srv, tmp_path, name, "--camera", camera, *lenses))
        assert _wait(lambda: len(live := _live(srv)) == 3 and live, "three live cameras") == asked
        # the rehearsal's zoom 0.5 on cam-1 is the front camera's ultra-wide
        status, ack = asyncio.run(call_api(srv, "POST", "/v1/cameras/cam-1/zoom", {"zoom": 0.5}))
        assert status == 200 and ack["ok"] is True, ack
        # a camera id another device holds is refused, with the holder named
        other = _start_device(srv, tmp_path, "intruder", "--camera", "cam-2")
        _, err = other.communicate(timeout=60)
        assert other.returncode == 69, err.decode()
        assert "camera cam-2 belongs to device dev-" in " ".join(err.decode().split())
        # so is a known device asking for another id than its own; without --camera it keeps its own
        moved = _start_device(srv, tmp_path, "front", "--camera", "cam-7")
        _, err = moved.communicate(timeout=60)
        assert moved.returncode == 69 and "is cam-1 in this server's registry, not cam-7" in " ".join(err.decode().split())
        bad = _start_device(srv, tmp_path, "odd", "--camera", "front")
        assert bad.wait(60) == 2 and b"not a camera id such as cam-1" in bad.stderr.read()
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        srv.stop()


def test_issue17_newcomer_the_registry_gives_the_asked_camera_id_or_refuses(tmp_path):
    from mmx.serve.registry import CameraTaken, Registry

    reg = Registry(tmp_path)
    assert reg.camera_for("d3", "cam-3") == (reg.cameras["cam-3"], True)
    assert reg.camera_for("d1")[0].camera == "cam-1" and reg.camera_for("d2")[0].camera == "cam-2"
    assert reg.camera_for("d4")[0].camera == "cam-4"  # numbering skips the id asked for
    assert reg.camera_for("d3", "cam-3")[1] is False and reg.camera_for("d3")[0].camera == "cam-3"
    with pytest.raises(CameraTaken, match="camera cam-3 belongs to device d3"):
        reg.camera_for("d5", "cam-3")
    with pytest.raises(CameraTaken, match="device d1 is cam-1 in this server's registry, not cam-9"):
        reg.camera_for("d1", "cam-9")
    reg.save()
    again = Registry(tmp_path)  # persisted: a restarted server still refuses and still gives
    assert again.camera_for("d3", "cam-3")[0].camera == "cam-3"
    with pytest.raises(CameraTaken):
        again.camera_for("d6", "cam-4")


# -- mmx device without --server: mDNS ---------------------------------------------------------


@pytest.fixture
def loopback_advertiser():
    """Advertise ``_mmx._tcp`` records with a real zeroconf instance bound to 127.0.0.1 only."""
    from zeroconf import IPVersion, Zeroconf

    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    infos = []

    def advertise(port: int, name: str, **properties: str):
        from mmx.serve.advertise import service_info

        info = service_info(port, name=name, addresses=["127.0.0.1"], properties=properties)
        zc.register_service(info)
        infos.append(info)
        return info

    yield advertise
    for info in infos:
        zc.unregister_service(info)
    zc.close()


def _unique(label: str) -> str:
    return f"mmx test {label} {os.getpid()}-{time.monotonic_ns()}"


def test_issue17_newcomer_find_server_resolves_the_advertised_server_on_loopback(loopback_advertiser):
    from mmx.device.discover import SERVICE_TYPE, browse, find_server
    from mmx.errors import ServiceUnavailableError
    from mmx.serve.advertise import SERVICE_TYPE as ADVERTISED

    assert SERVICE_TYPE == ADVERTISED
    plain, tls = _unique("plain"), _unique("tls")
    loopback_advertiser(8750, plain)
    loopback_advertiser(8751, tls, scheme="https", sha256="ab" * 32)
    found = asyncio.run(find_server(name=plain, timeout_s=20, interfaces=["127.0.0.1"]))
    assert (found.name, found.url, found.sha256) == (plain, "http://127.0.0.1:8750", None)
    found = asyncio.run(find_server(name=tls, timeout_s=20, interfaces=["127.0.0.1"]))
    assert (found.url, found.sha256) == ("https://127.0.0.1:8751", "ab" * 32)
    both = [s.name for s in asyncio.run(browse(timeout_s=20, settle_s=2.0, interfaces=["127.0.0.1"]))]
    assert plain in both and tls in both
    with pytest.raises(ServiceUnavailableError, match="several mmx servers found by mDNS"):
        asyncio.run(find_server(timeout_s=20, interfaces=["127.0.0.1"]))
    with pytest.raises(ServiceUnavailableError, match=r"no mmx server named 'nobody' found by mDNS \(_mmx._tcp\) within 1 s"):
        asyncio.run(find_server(name="nobody", timeout_s=1, interfaces=["127.0.0.1"]))


def test_issue17_newcomer_device_without_server_finds_it_by_mdns_and_pins_its_certificate(tmp_path, loopback_advertiser):
    from mmx.serve.tls import ensure_certificate

    cert = ensure_certificate(tmp_path / "tls", addresses=["127.0.0.1"], names=["localhost"])
    srv = ServerThread(tmp_path / "data", device_timeout_s=30.0)
    srv.config.host, srv.config.tls_hosts = None, ("127.0.0.1",)
    srv.config.tls_cert, srv.config.tls_key = cert.cert, cert.key
    srv.start()
    sha = cert.sha256.replace(":", "").lower()
    good, wrong = _unique("good"), _unique("wrong")
    loopback_advertiser(srv.config.port, good, scheme="https", sha256=sha)
    loopback_advertiser(srv.config.port, wrong, scheme="https", sha256="00" * 32)
    base = [*MMX, "device", "--token", TOKEN, "--fps", "0", "--state-dir", str(tmp_path / "devices"), "--json",
            "--max-retries", "0"]  # fmt: skip
    proc = subprocess.Popen([*base, "--name", "found", "--server-name", good], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"https://127.0.0.1:{srv.config.port}"
        line = _wait(lambda: proc.stdout.readline(), "the device's first event")
        event = orjson.loads(line)
        assert (event["event"], event["server"]) == ("connected", url), proc.stderr.read1().decode()

        async def state() -> dict:
            async with aiohttp.ClientSession(headers=AUTH) as http:
                async with http.get(url + "/v1/state", ssl=aiohttp.Fingerprint(bytes.fromhex(sha))) as resp:
                    return await resp.json()
        assert [c["name"] for c in asyncio.run(state())["cameras"] if c["status"] == "live"] == ["found"]
        # a server whose certificate is not the advertised one is not talked to
        other = subprocess.run([*base, "--name", "fooled", "--server-name", wrong], capture_output=True, timeout=120)
        assert other.returncode == 69, other.stderr.decode()
        said = " ".join(other.stderr.decode().split())
        assert f"presented a certificate with SHA-256 {sha}, not the fingerprint {'00' * 32} it was found with" in said
        assert [c["name"] for c in asyncio.run(state())["cameras"]] == ["found"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        srv.stop()


def test_issue17_newcomer_device_without_server_falls_back_to_this_machine_when_mdns_finds_none(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mmx.cli import app
    from mmx.device import discover

    async def nobody(**kwargs):
        raise discover.NotFound("no mmx server found by mDNS (_mmx._tcp) within 5 s")

    srv = ServerThread(tmp_path / "data", device_timeout_s=30.0).start()
    try:
        monkeypatch.setattr(discover, "find_server", nobody)  # for the in-process run below
        proc = subprocess.Popen([sys.executable, "-c", _FALLBACK_CHILD, srv.url, TOKEN, str(tmp_path / "devices")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            assert _wait(lambda: _live(srv), "the device joined") == {"home": "cam-1"}
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        assert f"no mmx server found by mDNS (_mmx._tcp) within 5 s; trying {srv.url}" in " ".join(err.decode().split())
        # --server-name asks for one server: not finding it is an error, not a fallback
        result = CliRunner().invoke(app, ["device", "--token", TOKEN, "--name", "x", "--server-name", "studio",
                                          "--state-dir", str(tmp_path / "devices")])  # fmt: skip
        assert result.exit_code == 69 and "no mmx server found by mDNS" in result.stderr
    finally:
        srv.stop()


#: `mmx device` in a child process with mDNS finding nothing and mmx serve's default
#: address pointing at the test server (argv: server URL, token, state dir).
_FALLBACK_CHILD = """
import sys
from mmx.commands import device as device_command
from mmx.device import discover

async def nobody(**kwargs):
    raise discover.NotFound("no mmx server found by mDNS (_mmx._tcp) within 5 s")

discover.find_server = nobody
device_command.LOCAL_SERVER = sys.argv[1]
from mmx.cli import main
sys.argv = ["mmx", "device", "--token", sys.argv[2], "--name", "home", "--fps", "0", "--state-dir", sys.argv[3]]
main()
"""


# -- mmx demo: its report and its data -----------------------------------------------------


def _demo_report(data_dir: Path) -> dict:
    d = str(data_dir)
    return {
        "ok": True, "failed_stage": None, "error": None, "data_dir": d, "server_url": "http://127.0.0.1:1",
        "hero_url": "http://127.0.0.1:2/?token=t", "ledger": f"{d}/ledger.sqlite", "session": "01JSESSION",
        "track": {"path": f"{d}/media/beat-120bpm.wav", "sha256": "ab", "tempo_bpm": 120.0, "beats": 61},
        "cameras": [{"camera": "cam-1", "name": "demo-cam-1", "lenses": {"back": [0.5, 1, 2], "front": [1]},
                     "placement": {"label": "front", "azimuth_deg": 0, "distance_m": 3.0}},
                    {"camera": "cam-2", "name": None, "placement": None, "lenses": None}],
        "cuts": [{"ts": 1.0, "from": None, "to": "cam-1", "by": "operator"},
                 {"ts": 2.0, "from": "cam-1", "to": "cam-2", "by": "ghost", "track_time_s": 4.0, "beat_error_ms": 1.2}],
        "cuts_by": {"operator": 1, "ghost": 1}, "beat_error_ms": {"median": 1.2, "max": 1.2},
        "stills": [{"still": "s1", "camera": "cam-1", "path": f"{d}/serve/sessions/01JSESSION/stills/cam-1/s1.jpg",
                    "sha256": "ab", "hash_ok": True}],
        "ghost": {"proposed": 3, "accepted": 2, "expired": 1},
        "ledger_summary": {"events": 120, "status": "completed", "title": None, "started_at": 1795264000.0,
                           "completed_at": 1795264030.5},
        "dataset": {"dir": f"{d}/dataset", "counts": {"train": 8, "val": 2, "test": 2},
                    "dropped": {"total": 3, "reasons": {"observed_below_min": 3, "no_body_size": 0}}},
        "logs": f"{d}/logs", "stages": [],
    }  # fmt: skip


def test_issue17_newcomer_demo_report_reads_like_ledger_show(tmp_path):
    import io

    from rich.console import Console

    from mmx.commands.demo import render_report

    for kept in (True, False):
        buf = io.StringIO()
        render_report(_demo_report(tmp_path / "d"), Console(file=buf, width=200), kept=kept)
        out = buf.getvalue()
        assert "None" not in out and "{" not in out and "[0.5" not in out and "'" not in out, out
        assert "front 0° 3 m" in out and "back 0.5× 1× 2× · front 1×" in out
        assert "3 proposals — 2 accepted, 0 vetoed, 1 expired" in out
        assert "12 windows (train 8 · val 2 · test 2); 3 dropped (observed below min 3)" in out
        assert "serve/sessions/01JSESSION/stills/cam-1/s1.jpg" in out and f"{tmp_path}/d/serve" not in out
        if kept:
            assert f"data kept in {tmp_path}/d" in out
            assert f"mmx ledger show --last --ledger {tmp_path}/d/ledger.sqlite" in out
        else:
            assert f"data removed: {tmp_path}/d (the ledger, the capture directory, the dataset and the logs) is " \
                   "deleted; keep it with --keep, or write it to a directory of your own with --data DIR" in out


def test_issue17_newcomer_demo_says_whether_it_kept_its_data(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mmx.cli import app
    from mmx.demo import run as demo_run

    made: list[Path] = []

    class FakeDemo:  # the stages are tested in tests/test_demo.py; here: what happens to the data
        def __init__(self, config, on_stage=None):
            self.config = config
            made.append(config.data_dir)

        def run(self):
            self.config.data_dir.mkdir(parents=True, exist_ok=True)
            (self.config.data_dir / "ledger.sqlite").write_bytes(b"")

            class Report:
                def to_dict(_self):
                    return _demo_report(self.config.data_dir)

            return Report()

    monkeypatch.setattr(demo_run, "Demo", FakeDemo)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    runner = CliRunner()
    removed = runner.invoke(app, ["demo", "--json"])
    assert removed.exit_code == 0, removed.stderr
    assert orjson.loads(removed.stdout)["data_kept"] is False and not made[-1].exists()
    said = " ".join(removed.stderr.split())
    assert "(a temporary directory, removed after a successful run unless --keep)" in said
    assert f"data removed: {made[-1]}" in said and "look at it" not in said
    kept = runner.invoke(app, ["demo", "--json", "--keep"])
    assert orjson.loads(kept.stdout)["data_kept"] is True and (made[-1] / "ledger.sqlite").exists()
    assert f"data kept in {made[-1]}" in " ".join(kept.stderr.split())
    own = runner.invoke(app, ["demo", "--json", "--data", str(tmp_path / "mine")])
    assert orjson.loads(own.stdout)["data_kept"] is True and (tmp_path / "mine" / "ledger.sqlite").exists()
