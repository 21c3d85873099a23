"""mmx serve's one authentication point: token, console cookie, non-UTF-8 headers."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from mmx.serve.auth import SESSION_COOKIE, session_cookie_value

from .test_serve import AUTH, TOKEN, srv  # noqa: F401 - srv is a fixture


def _raw_request(port: int, header: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /v1/state HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_issue17_item7_non_utf8_authorization_is_401_not_500(srv):
    answer = _raw_request(srv.config.port, b"Authorization: Bearer \xff\xfe\xc3(")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b'"wrong token"' in answer
    assert not any("internal error" in line for line in srv.logs)


def test_console_cookie_is_derived_from_the_token_and_accepted(srv):
    async def main() -> None:
        cookie = {SESSION_COOKIE: session_cookie_value(TOKEN)}
        async with aiohttp.ClientSession(cookies=cookie) as http:
            async with http.get(srv.url + "/v1/state") as resp:
                assert resp.status == 200
        async with aiohttp.ClientSession(cookies={SESSION_COOKIE: session_cookie_value("other")}) as http:
            async with http.get(srv.url + "/v1/state") as resp:
                assert resp.status == 401
        async with aiohttp.ClientSession(cookies={SESSION_COOKIE: TOKEN}) as http:  # the raw token is no cookie
            async with http.get(srv.url + "/v1/state") as resp:
                assert resp.status == 401
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.get(srv.url + "/v1/state") as resp:
                assert resp.status == 200

    assert session_cookie_value(TOKEN) != TOKEN
    asyncio.run(main())
