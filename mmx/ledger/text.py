"""The ledger's values as short human text, for the readable views of ``mmx ledger``.

Every function here takes what a ledger file may hold, not only what the validation
contract lets in today: a ledger written by an older mmx can hold a ``ts`` of 1e20 or
-1e308, data nested hundreds deep, a placement field of the wrong type. Such a value is
rendered as its number (``ts=1e+20``) or cut short (``…``), never raised on (issue 17 item 3).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import orjson

from mmx.events import MAX_DEPTH, TS_MAX, TS_MIN

#: Longest rendering of one nested data value in `data_summary`.
MAX_VALUE_CHARS = 40


def in_range(ts: Any) -> bool:
    """Whether ``ts`` is a number of Unix seconds within the contract's [TS_MIN, TS_MAX]."""
    return type(ts) in (int, float) and TS_MIN <= ts <= TS_MAX


def _local(ts: Any, fmt: str) -> str | None:
    if not in_range(ts):
        return None
    return datetime.fromtimestamp(ts).astimezone().strftime(fmt)


def when(ts: Any) -> str:
    """Local date and time (``2026-11-26 14:03:07``); ``—`` for None; ``ts=<number>`` out of range."""
    if ts is None:
        return "—"
    return _local(ts, "%Y-%m-%d %H:%M:%S") or f"ts={number(ts)}"


def clock(ts: Any) -> str:
    """Local time of day with ms (``14:03:07.250``); ``ts=<number>`` out of range."""
    text = _local(ts, "%H:%M:%S.%f")
    return text[:-3] if text is not None else f"ts={number(ts)}"


def day_minute(ts: Any) -> str:
    """``11-26 14:03`` for a session list; ``—`` for None; ``ts=<number>`` out of range."""
    if ts is None:
        return "—"
    return _local(ts, "%m-%d %H:%M") or f"ts={number(ts)}"


def number(value: Any) -> str:
    """A number in ``:g`` form (``1e+20``, ``0.5``); anything else as ``str``."""
    if type(value) in (int, float):
        return f"{value:g}"
    return str(value)


def duration(seconds: Any) -> str:
    """``2:05.3`` or ``4.2s``; ``—`` for None; a non-finite or absurd length as its number."""
    if seconds is None:
        return "—"
    if type(seconds) not in (int, float) or not math.isfinite(seconds) or abs(seconds) > TS_MAX - TS_MIN:
        return f"{number(seconds)}s"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)}:{sec:04.1f}" if minutes else f"{sec:.1f}s"


def end_when(started_at: Any, completed_at: Any) -> str:
    """The end time, without its date when the session ended on the day it started."""
    if completed_at is None:
        return "still active"
    end = when(completed_at)
    return end[11:] if in_range(completed_at) and in_range(started_at) and end[:10] == when(started_at)[:10] else end


def placement(p: Any) -> str:
    """``front-left -30° ↑10° 2.5 m``; ``—`` when there is none."""
    if not isinstance(p, dict) or not p:
        return "—"
    parts = [str(p["label"])] if p.get("label") else []
    for key, fmt in (("azimuth_deg", "{}°"), ("elevation_deg", "↑{}°"), ("distance_m", "{} m")):
        if p.get(key) is not None:
            parts.append(fmt.format(number(p[key])))
    return " ".join(parts) or "—"


def clip_depth(value: Any, depth: int = MAX_DEPTH) -> Any:
    """``value`` with objects and arrays nested deeper than ``depth`` levels replaced by
    ``"…"``, so it can be re-encoded (orjson refuses more than 254 levels)."""
    if isinstance(value, dict):
        if depth <= 0:
            return "…"
        return {k: clip_depth(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth <= 0:
            return "…"
        return [clip_depth(v, depth - 1) for v in value]
    return value


def compact(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """One data value as compact text of at most ``limit`` characters (JSON for objects
    and arrays, cut with ``…``)."""
    if isinstance(value, dict | list):
        text = orjson.dumps(clip_depth(value, 8)).decode()
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def data_summary(data: Any) -> str:
    """``key=value …`` for an event's data, each value at most `MAX_VALUE_CHARS` long."""
    if not isinstance(data, dict):
        return compact(data)
    return " ".join(f"{key}={compact(value) if isinstance(value, dict | list) else value}" for key, value in data.items())
