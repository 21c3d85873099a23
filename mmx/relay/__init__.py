"""mmx relay: the low-latency WebRTC hero feed (WHIP in, WHEP out, hero follows director.cut).

Modules: `hub` (camera feeds, shared encoders, fan-out), `server` (the aiohttp app),
`director` (following director.cut from mmx serve or a JSON Lines stream), `client`
(`whip_publish` / `whep_subscribe` for Python peers), `jitter` (marker-bit frame release for
aiortc's jitter buffer), `net` (peer connections with restricted host candidates), `pattern`
(the source-id / send-time test pattern).
"""
