"""WHIP publishing and WHEP subscribing for Python peers (``mmx device --relay``, tests, bench).

Non-trickle WHIP/WHEP (RFC 9725 and the WHEP draft): the full offer, with every ICE candidate
already gathered, is POSTed as ``application/sdp``; the ``201`` answer carries the relay's
candidates and a ``Location`` to DELETE when done. ICE stays on ``ice_hosts`` (loopback by
default) with no STUN/TURN servers. Both helpers install the marker-bit jitter-buffer patch
(`mmx.relay.jitter`) so received frames are decoded without waiting for the next frame; a
WHEP viewer's decoder queue is bounded (a starved viewer skips to a keyframe, never lags).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from mmx.errors import DataError, ServiceUnavailableError, TemporaryFailure
from mmx.relay.jitter import bound_decoder_queues, install_marker_release
from mmx.relay.net import HostRestrictedPeerConnection

#: Seconds to wait for the relay's answer.
HTTP_TIMEOUT_S = 15.0


@dataclass
class RelaySession:
    """A live WHIP or WHEP session: the peer connection and the resource URL to DELETE."""

    pc: RTCPeerConnection
    location: str | None
    token: str | None = None

    async def close(self) -> None:
        """DELETE the session at the relay (best effort) and close the peer connection."""
        try:
            if self.location:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                    async with http.delete(self.location, headers=_auth(self.token)):
                        pass
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass
        finally:
            await self.pc.close()


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


async def _exchange(url: str, pc: RTCPeerConnection, token: str | None) -> str | None:
    """POST the local offer to ``url``, apply the answer; returns the absolute Location."""
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp", **_auth(token)}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as http:
            async with http.post(url, data=pc.localDescription.sdp, headers=headers) as resp:
                body = await resp.text()
                if resp.status != 201:
                    reason = body.strip()[:300]
                    if resp.status in (401, 403):
                        raise DataError(f"relay refused the token ({resp.status}): {reason}",
                                        hint="pass the relay's --token")
                    if resp.status >= 500:
                        raise TemporaryFailure(f"relay error {resp.status} at {url}: {reason}")
                    raise DataError(f"relay answered {resp.status} at {url}: {reason}")
                location = resp.headers.get("Location")
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as exc:
        raise ServiceUnavailableError(f"cannot reach the relay at {url}: {exc}",
                                      hint="is `mmx relay` running?") from None
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return urljoin(url, location) if location else None


async def whip_publish(url: str, track: MediaStreamTrack, *, token: str | None = None,
                       ice_hosts: Sequence[str] | None = ("127.0.0.1",)) -> RelaySession:
    """Publish ``track`` (video) to the relay over WHIP: ``url`` is ``{relay}/whip/{camera}``.

    A track with a ``request_keyframe()`` method is taken to yield pre-encoded VP8
    `av.Packet` objects (e.g. ``pattern_track(encoded=True)``): VP8 is the only codec offered
    and the relay's keyframe requests call that method.

    Returns a `RelaySession`; ``await session.close()`` stops publishing. Raises
    `ServiceUnavailableError` when the relay is unreachable, `DataError` when it refuses the
    offer or the token, `TemporaryFailure` on a relay-side error.
    """
    install_marker_release()
    pc = HostRestrictedPeerConnection(ice_hosts=ice_hosts)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    request_keyframe = getattr(track, "request_keyframe", None)
    if callable(request_keyframe):
        # a track that encodes by itself: VP8 only, and PLI/FIR from the relay reach it
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                         if c.mimeType.lower() in ("video/vp8", "video/rtx")])
        transceiver.sender._send_keyframe = request_keyframe
    try:
        location = await _exchange(url, pc, token)
    except BaseException:
        await pc.close()
        raise
    return RelaySession(pc=pc, location=location, token=token)


async def whep_subscribe(url: str, *, token: str | None = None,
                         ice_hosts: Sequence[str] | None = ("127.0.0.1",),
                         timeout_s: float = HTTP_TIMEOUT_S) -> tuple[RTCPeerConnection, MediaStreamTrack]:
    """Subscribe to ``url`` (``{relay}/whep/hero`` or ``{relay}/whep/{camera}``) over WHEP.

    Returns ``(pc, track)``: ``await track.recv()`` gives decoded `av.VideoFrame` objects.
    The DELETE URL is kept as ``pc.mmx_session`` (a `RelaySession`; close it to leave cleanly,
    or just ``await pc.close()``). Raises as `whip_publish`, and `TemporaryFailure` when no
    track arrives within ``timeout_s``.
    """
    install_marker_release()
    pc = HostRestrictedPeerConnection(ice_hosts=ice_hosts)
    got: asyncio.Future = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        if track.kind == "video" and not got.done():
            got.set_result(track)

    pc.addTransceiver("video", direction="recvonly")
    bound_decoder_queues(pc)
    try:
        location = await _exchange(url, pc, token)
        track = await asyncio.wait_for(got, timeout_s)
    except asyncio.TimeoutError:
        await pc.close()
        raise TemporaryFailure(f"no video track from {url} within {timeout_s:g} s") from None
    except BaseException:
        await pc.close()
        raise
    pc.mmx_session = RelaySession(pc=pc, location=location, token=token)  # type: ignore[attr-defined]
    return pc, track
