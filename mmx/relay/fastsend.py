"""A lean RTP loop for hero/camera viewers: shared payloads, one header per packet, one await.

aiortc's `RTCRtpSender._run_rtp` does, per viewer and per packet: packetize the frame again
(``Encoder.pack``), build an `RtpPacket`, read the clock, serialize header extensions, then
await five layers (DTLS → ICE transport → aioice connection → pair → protocol) to send. With
every viewer getting the same frames that per-viewer work is the relay's only cost that grows
with viewers, so `install_fast_rtp` replaces the loop of one sender with one that:

- packetizes each shared frame once for all viewers (VP8 payloads with the frame's own
  picture id, `EncodedFrame.vp8_payloads`);
- serializes the header extensions (mid, abs-send-time) once per frame per viewer and packs
  each RTP header with one ``struct.pack``;
- SRTP-protects with the viewer's DTLS-SRTP context and hands the datagram to the nominated
  ICE pair's protocol directly.

Everything else stays aiortc's: negotiation, RTCP (sender reports are fed the same counters,
NACKs are served from the same history, PLI/FIR reach the shared encoder), stop(). Written
against aiortc 1.16 / aioice 0.13 internals (name-mangled sender fields, ``_tx_srtp``,
``Connection._nominated``); `install_fast_rtp` leaves the stock loop in place when they are
not there.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from aiortc import clock
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, RtpPacket
from aiortc.utils import random32

_P = "_RTCRtpSender__"
_HEADER = struct.Struct("!BBHLL")
_EXT_HEADER = struct.Struct("!HH")


def install_fast_rtp(sender: Any, track: Any) -> bool:
    """Make ``sender`` (not yet started) send ``track``'s shared frames with the lean loop.

    ``track`` is a `mmx.relay.hub.FanoutTrack`. Returns False (stock loop kept) when the
    aiortc internals this relies on are missing.
    """
    needed = ("rtp_started", "rtp_exited", "rtp_header_extensions_map", "rtp_history", "ntp_timestamp",
              "rtp_timestamp", "octet_count", "packet_count")
    if any(not hasattr(sender, _P + name) for name in needed) or getattr(sender, _P + "started", True):
        return False

    async def run_rtp(codec: Any) -> None:
        if codec.mimeType.lower() != "video/vp8":
            raise RuntimeError(f"fast RTP path is VP8 only, negotiated {codec.mimeType}")
        await _run(sender, track, codec)

    sender._run_rtp = run_rtp
    return True


def _send_datagram(dtls: Any) -> Any:
    """The function sending one RTP packet on ``dtls``: SRTP-protected, straight to the
    nominated ICE pair; aiortc's own ``_send_rtp`` when aioice's internals are not there."""
    connection = getattr(dtls.transport, "_connection", None)
    protect = getattr(getattr(dtls, "_tx_srtp", None), "protect", None)
    if protect is None or not isinstance(getattr(connection, "_nominated", None), dict):
        return dtls._send_rtp

    async def send(data: bytes) -> None:
        pair = connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("no nominated ICE pair")
        await pair.protocol.send_data(protect(data), pair.remote_addr)

    return send


async def _run(sender: Any, track: Any, codec: Any) -> None:
    getattr(sender, _P + "rtp_started").set()
    extensions_map = getattr(sender, _P + "rtp_header_extensions_map")
    history: dict[int, RtpPacket] = getattr(sender, _P + "rtp_history")
    mid = getattr(sender, _P + "mid")
    payload_type = codec.payloadType
    sequence_number = random_sequence_number()
    timestamp_origin = random32()
    send = None
    octets = packets = 0
    try:
        while True:
            entry = await track.next_entry()
            if not sender._enabled:
                continue
            if send is None:
                send = _send_datagram(sender.transport)
            payloads = entry.vp8_payloads()
            timestamp = (timestamp_origin + entry.rtp_timestamp) & 0xFFFFFFFF
            ntp = clock.current_ntp_time()
            template = RtpPacket(payload_type=payload_type, timestamp=timestamp)
            template.extensions.abs_send_time = (ntp >> 14) & 0x00FFFFFF
            template.extensions.mid = mid
            profile, value = extensions_map.set(template.extensions)
            ext_block = _EXT_HEADER.pack(profile, len(value) >> 2) + value if value else b""
            first = 0x90 if value else 0x80  # version 2, extension bit
            ssrc = sender._ssrc
            last = len(payloads) - 1
            for i, payload in enumerate(payloads):
                marker = 0x80 if i == last else 0
                await send(_HEADER.pack(first, marker | payload_type, sequence_number, timestamp, ssrc)
                           + ext_block + payload)
                # kept for NACK: aiortc's _retransmit serializes it again (rare)
                packet = RtpPacket(payload_type=payload_type, marker=1 if marker else 0,
                                   sequence_number=sequence_number, timestamp=timestamp, ssrc=ssrc, payload=payload)
                packet.extensions = template.extensions
                history[sequence_number % RTP_HISTORY_SIZE] = packet
                sequence_number = (sequence_number + 1) & 0xFFFF
                octets += len(payload)
                packets += 1
            # what aiortc's RTCP loop puts in its sender reports
            setattr(sender, _P + "ntp_timestamp", ntp)
            setattr(sender, _P + "rtp_timestamp", timestamp)
            setattr(sender, _P + "octet_count", octets)
            setattr(sender, _P + "packet_count", packets)
    except (asyncio.CancelledError, ConnectionError, MediaStreamError, OSError):
        pass
    finally:
        track.stop()
        getattr(sender, _P + "rtp_exited").set()
