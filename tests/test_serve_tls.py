"""HTTPS for `mmx serve --lan`: the local CA and certificate, TLS serving, pinned clients.

The server runs for real over TLS on loopback with the generated certificate; clients trust
exactly that CA (httpx, aiohttp) and nothing else.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import ssl
import time

import aiohttp
import httpx
import orjson
import pytest
from cryptography import x509

from mmx.errors import DataError, InputMissingError
from mmx.serve import tls
from mmx.serve.tls import ensure_certificate, load_certificate

from .browser_fixtures import CHROMEDRIVER, CHROMIUM, chromium, wait_for
from .test_serve import AUTH, TOKEN, ServerThread

pytest.importorskip("cryptography")


class TlsServer(ServerThread):
    """`ServerThread` serving HTTPS on ``tls_hosts`` with ``certificate`` (plain on ``host`` if given)."""

    def __init__(self, data_dir, certificate, *, host=None, tls_hosts=("127.0.0.1",), **overrides) -> None:
        super().__init__(data_dir, **overrides)
        self.config.host = host
        self.config.tls_hosts = tuple(tls_hosts)
        self.config.tls_cert, self.config.tls_key, self.config.tls_ca = certificate.cert, certificate.key, certificate.ca

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws_url(self) -> str:
        return self.server.url.replace("https://", "wss://").replace("http://", "ws://") + "/v1/devices/ws"


def pinned(certificate) -> ssl.SSLContext:
    """A client context that trusts only ``certificate``'s CA (hostname checked)."""
    return ssl.create_default_context(cafile=str(certificate.ca))


def test_the_local_ca_and_certificate_are_made_once_and_renewed_for_new_addresses(tmp_path):
    home = tmp_path / "tls"
    first = ensure_certificate(home, addresses=["192.168.50.10"], names=["studio.local"])
    assert first.made
    assert sorted(p.name for p in home.iterdir()) == ["ca-key.pem", "ca.pem", "cert.pem", "key.pem"]
    for name in ("ca-key.pem", "key.pem"):
        assert (home / name).stat().st_mode & 0o077 == 0, name
    assert first.names == ("studio.local", "localhost")
    assert first.addresses == ("192.168.50.10", "127.0.0.1")
    assert len(first.sha256.split(":")) == 32 and first.sha256 == first.sha256.upper()
    assert first.ca_sha256 != first.sha256
    chain = x509.load_pem_x509_certificates((home / "cert.pem").read_bytes())
    leaf, ca = chain
    assert leaf.issuer == ca.subject and ca.subject.rfc4514_string().startswith("CN=mmx local CA")
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    # Apple's limit for TLS server certificates: 825 days
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=825, hours=1)

    again = ensure_certificate(home, addresses=["192.168.50.10"], names=["studio.local"])
    assert not again.made and again.sha256 == first.sha256
    moved = ensure_certificate(home, addresses=["10.0.0.7"], names=["studio.local"])
    assert moved.made and moved.sha256 != first.sha256
    assert moved.ca_sha256 == first.ca_sha256  # phones that trust the CA keep trusting
    assert "10.0.0.7" in moved.addresses


def test_lan_addresses_come_from_the_interfaces_phone_reachable_first(monkeypatch):
    import socket
    from types import SimpleNamespace

    import psutil

    def addr(a, family=socket.AF_INET):
        return SimpleNamespace(family=family, address=a)

    fake = {"lo": [addr("127.0.0.1")], "docker0": [addr("172.17.0.1")], "en0": [addr("192.168.50.10"), addr("fe80::1", socket.AF_INET6)],
            "llw0": [addr("169.254.3.4")], "utun": [addr("100.64.0.2")], "en1": [addr("10.1.2.3")]}  # fmt: skip
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: fake)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(None, None, None, "", ("127.0.1.1", 0))])
    assert tls.lan_addresses() == ["192.168.50.10", "10.1.2.3", "172.17.0.1", "100.64.0.2", "169.254.3.4"]
    assert tls.local_name() == f"{socket.gethostname().split('.')[0]}.local"


def test_a_studio_certificate_is_checked_as_a_pair(tmp_path):
    mine = ensure_certificate(tmp_path / "studio", addresses=[], names=["studio.local"])
    other = ensure_certificate(tmp_path / "other", addresses=[], names=["other.local"])
    loaded = load_certificate(mine.cert, mine.key)
    assert loaded.sha256 == mine.sha256 and loaded.ca is None and loaded.ca_sha256 is None
    with pytest.raises(DataError) as exc:
        load_certificate(mine.cert, other.key)
    assert exc.value.message.startswith(f"cannot use {mine.cert} with {other.key}:")
    with pytest.raises(InputMissingError) as missing:
        load_certificate(tmp_path / "nope.pem", mine.key)
    assert missing.value.message == f"no such certificate file: {tmp_path / 'nope.pem'}"
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(DataError):
        load_certificate(tmp_path / "junk.pem", mine.key)


def test_tls_serve_with_pinned_clients_camera_token_over_wss_and_the_ca_download(tmp_path):
    certificate = ensure_certificate(tmp_path / "tls", addresses=[], names=["studio.local"])
    srv = TlsServer(tmp_path / "data", certificate).start()
    try:
        assert srv.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=srv.url, verify=pinned(certificate), headers=AUTH, timeout=10) as http:
            assert http.get("/v1/state").status_code == 200
            made = http.post("/v1/pairings", json={"name": "phone"}).json()
            assert made["url"].startswith(f"{srv.url}/camera#token=")
            ca = http.get("/ca.crt", headers={"Authorization": ""})
            assert ca.status_code == 200 and ca.headers["content-type"] == "application/x-x509-ca-cert"
            assert ca.content == certificate.ca.read_bytes()
        # an unpinned client refuses the self-signed chain
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(srv.url + "/v1/state", headers=AUTH, timeout=10)
        # nor is plain HTTP answered on the TLS port
        with pytest.raises(httpx.HTTPError):
            httpx.get(srv.url.replace("https://", "http://") + "/v1/state", headers=AUTH, timeout=5)

        async def device() -> None:
            connector = aiohttp.TCPConnector(ssl=pinned(certificate))
            async with aiohttp.ClientSession(connector=connector) as session:
                ws = await session.ws_connect(srv.ws_url + f"?token={made['token']}")
                await ws.send_str(orjson.dumps({"t": "hello", "token": made["token"], "device": "dev-wss",
                                                "ts": time.time()}).decode())  # fmt: skip
                welcome = orjson.loads((await ws.receive(timeout=5)).data)
                assert welcome["t"] == "welcome"
                async with session.delete(srv.url + f"/v1/pairings/{made['id']}", headers=AUTH) as resp:
                    assert resp.status == 200
                msg = await ws.receive(timeout=1.0)
                assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 4401)

        asyncio.run(device())
    finally:
        srv.stop()


def test_lan_serving_keeps_loopback_plain_on_the_same_port(tmp_path):
    """--lan's shape: plain HTTP on 127.0.0.1, HTTPS on another address (127.0.0.2 stands in for the LAN)."""
    certificate = ensure_certificate(tmp_path / "tls", addresses=["127.0.0.2"], names=[])
    srv = TlsServer(tmp_path / "data", certificate, host="127.0.0.1", tls_hosts=("127.0.0.2",)).start()
    try:
        port = srv.server.port
        assert srv.server.urls == [f"http://127.0.0.1:{port}", f"https://127.0.0.2:{port}"]
        assert srv.server.camera_base == f"https://127.0.0.2:{port}"  # phones get the HTTPS address
        assert httpx.get(f"http://127.0.0.1:{port}/v1/state", headers=AUTH, timeout=10).status_code == 200
        with httpx.Client(verify=pinned(certificate), timeout=10) as http:
            state = http.get(f"https://127.0.0.2:{port}/v1/state", headers={"Authorization": f"Bearer {TOKEN}"})
            assert state.status_code == 200
            made = http.post(f"https://127.0.0.2:{port}/v1/pairings", headers=AUTH, json={}).json()
        assert made["url"].startswith(f"https://127.0.0.2:{port}/camera#token=")
    finally:
        srv.stop()


# -- Chromium over https:// and wss:// with the certificate's SPKI pinned -------------------


def _spki_flag(certificate) -> str:
    return f"--ignore-certificate-errors-spki-list={certificate.spki_sha256}"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)), reason="no Debian chromium")
def test_chromium_pinned_to_the_spki_opens_the_console_pairs_over_wss_and_is_revoked(tmp_path):
    from PIL import Image

    zxingcpp = pytest.importorskip("zxingcpp")
    certificate = ensure_certificate(tmp_path / "tls", addresses=[], names=["studio.local"])
    stranger = ensure_certificate(tmp_path / "other-tls", addresses=[], names=["other.local"])
    srv = TlsServer(tmp_path / "data", certificate).start()
    unpinned = TlsServer(tmp_path / "data-2", stranger).start()
    http = httpx.Client(base_url=srv.url, verify=pinned(certificate), headers=AUTH, timeout=10)
    try:
        with chromium(tmp_path / "profile", _spki_flag(certificate)) as driver:
            # a certificate whose SPKI is not pinned is refused: the pin is what lets Chromium in
            driver.get(unpinned.url + "/")
            assert "Live Director" not in driver.title

            driver.get(f"{srv.url}/?token={TOKEN}")  # the console link: the cookie, then /
            wait_for(lambda: driver.execute_script("return location.protocol === 'https:' && document.querySelector('#login').hidden"
                                                   " && document.querySelector('#connection').dataset.state === 'live'"),
                     15, "the console live over https")  # fmt: skip
            assert driver.execute_script("return window.isSecureContext") is True
            wait_for(lambda: driver.execute_script("return !document.querySelector('#pair').hidden"), 10, "the pair button")
            from selenium.webdriver.common.action_chains import ActionChains

            ActionChains(driver).send_keys("p").perform()
            wait_for(lambda: driver.execute_script("const i = document.querySelector('#pair-qr');"
                                                   " return document.querySelector('#pair-dialog').open && i.complete && i.naturalWidth > 0"),
                     10, "the pairing QR code")  # fmt: skip
            link = driver.execute_script("return document.querySelector('#pair-url').textContent")
            assert link.startswith(f"{srv.url}/camera#token=mmxcam_")
            shot = tmp_path / "pairing.png"
            driver.find_element("css selector", "#pair-dialog").screenshot(str(shot))
            found = zxingcpp.read_barcodes(Image.open(shot).convert("L"))
            assert [f.text for f in found] == [link]  # the code on screen is the link
            token = link.split("#token=")[1]
            pairing = next(p for p in http.get("/v1/pairings").json()["pairings"] if p["name"] == "phone")

            # the page's origin joins the device socket over wss:// with the camera token
            driver.execute_script("""
              const ws = new WebSocket(`wss://${location.host}/v1/devices/ws?token=${arguments[0]}`);
              window.cam = {messages: [], close: null};
              ws.onopen = () => ws.send(JSON.stringify({t: "hello", token: arguments[0], device: "dev-chromium",
                                                        name: "Chromium", ts: Date.now() / 1000}));
              ws.onmessage = (ev) => window.cam.messages.push(JSON.parse(ev.data));
              ws.onclose = (ev) => { window.cam.close = {code: ev.code, reason: ev.reason, at: Date.now() / 1000}; };
            """, token)  # fmt: skip
            welcome = wait_for(lambda: driver.execute_script("return window.cam.messages.find(m => m.t === 'welcome')"), 10, "welcome")
            state = http.get("/v1/state").json()
            assert [(c["camera"], c["status"]) for c in state["cameras"]] == [(welcome["camera"], "live")]
            assert http.get(f"/v1/pairings/{pairing['id']}").json()["connected"] == 1

            assert http.delete(f"/v1/pairings/{pairing['id']}").status_code == 200
            answered = time.time()
            closed = wait_for(lambda: driver.execute_script("return window.cam.close"), 10, "the socket closed")
            assert (closed["code"], closed["reason"]) == (4401, "pairing revoked")
            assert closed["at"] - answered < 1.0, closed
    finally:
        http.close()
        unpinned.stop()
        srv.stop()
