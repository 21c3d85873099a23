"""The ghost's policy file: weights, rules and signal constants, read from and written to TOML.

A policy file has up to four tables (``default_policy.toml`` documents every key):
``[weights]`` (`Weights`), ``[rules]`` (`Rules`), ``[signals]`` (`mmx.ghost.signals.SignalParams`)
and ``[provenance]`` — free-form metadata that ``mmx ghost-train`` writes (inputs' sha256,
counts, held-out scores) and that does not change what the policy does. Keys left out keep
their defaults; an unknown table or key is an error (a typo must not pass silently).
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from mmx.errors import DataError, InputMissingError
from mmx.ghost.signals import SignalParams

#: The signals a camera's score weighs, in the order of `Weights` and of the reasons.
FEATURES = ("presence", "framing", "motion", "stillness")
#: Modes whose proposals wait for a human: the proposal budget holds there.
ATTENDED_MODES = ("manual", "ghost")


@dataclass(frozen=True, slots=True)
class Weights:
    """Weight of each signal in a camera's score (policy file table ``[weights]``)."""

    presence: float = 0.2
    framing: float = 0.25
    motion: float = 0.45
    stillness: float = 0.1

    def as_tuple(self) -> tuple[float, ...]:
        return tuple(getattr(self, f) for f in FEATURES)


@dataclass(frozen=True, slots=True)
class Rules:
    """Switching rules (policy file table ``[rules]``); times in seconds.

    ``energy_influence`` k scales ``min_shot_s``, ``max_shot_s`` and ``min_gain`` by
    ``1 + k (1 − 2e)`` where e ∈ [0, 1] is the current bar's energy rank in the track
    (`mmx.ghost.beats.BeatGrid.bar_energy`): shorter shots in loud bars, longer in quiet ones.
    """

    min_shot_s: float = 2.0
    max_shot_s: float = 12.0
    min_gain: float = 0.15
    min_score: float = 0.2
    veto_cooldown_s: float = 10.0
    expiry_cooldown_s: float = 2.0
    jump_cut_deg: float = 20.0
    lead_beats: int = 1
    min_lead_s: float = 0.25
    prefer_downbeat_within_beats: int = 3
    expire_after_s: float = 2.0
    clock_period_s: float = 0.5
    max_proposals_per_min: int = 6
    expiry_pause_s: float = 5.0
    expiry_pause_growth: float = 2.0
    expiry_pause_max_s: float = 60.0
    held_repeat_s: float = 30.0
    energy_influence: float = 0.5


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """A whole policy: weights, rules, signal constants and (not compared) provenance."""

    weights: Weights = field(default_factory=Weights)
    rules: Rules = field(default_factory=Rules)
    signals: SignalParams = field(default_factory=SignalParams)
    provenance: dict[str, Any] | None = field(default=None, compare=False, hash=False)

    def with_rules(self, **changes: Any) -> PolicyConfig:
        """A copy with some rules replaced (e.g. ``lead_beats`` from the command line)."""
        return replace(self, rules=replace(self.rules, **changes))

    def with_weights(self, **changes: Any) -> PolicyConfig:
        """A copy with some weights replaced."""
        return replace(self, weights=replace(self.weights, **changes))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The three tables that decide behaviour (no provenance), as plain dicts."""
        return {name: {f.name: getattr(getattr(self, name), f.name) for f in fields(getattr(self, name))}
                for name in ("weights", "rules", "signals")}  # fmt: skip

    def digest(self) -> str:
        """sha256 (hex) of the behaviour tables in canonical JSON: equal digests, equal policies."""
        return hashlib.sha256(orjson.dumps(self.as_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()


_TABLES: dict[str, type] = {"weights": Weights, "rules": Rules, "signals": SignalParams}


def default_policy_text() -> str:
    """The text of the shipped ``default_policy.toml``."""
    return resources.files("mmx.ghost").joinpath("default_policy.toml").read_text(encoding="utf-8")


def policy_from_dict(doc: dict[str, Any], *, source: str = "policy") -> PolicyConfig:
    """A `PolicyConfig` from parsed tables (TOML, or the ``policy`` of a ``ghost.online``
    event); the checks of `parse_policy`."""
    parts: dict[str, Any] = {}
    for table, value in doc.items():
        if table == "provenance":
            if not isinstance(value, dict):
                raise DataError(f"{source}: [provenance] must be a table")
            parts["provenance"] = value
            continue
        cls = _TABLES.get(table)
        if cls is None:
            raise DataError(f"{source}: unknown table [{table}]", hint=f"known tables: {', '.join([*_TABLES, 'provenance'])}")
        if not isinstance(value, dict):
            raise DataError(f"{source}: [{table}] must be a table")
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, v in value.items():
            if key not in known:
                raise DataError(f"{source}: unknown key {table}.{key}", hint=f"known keys: {', '.join(known)}")
            want = int if known[key].type in ("int", int) else float
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and not isinstance(v, int)):
                raise DataError(f"{source}: {table}.{key} must be {'an integer' if want is int else 'a number'}")
            if not math.isfinite(v):
                raise DataError(f"{source}: {table}.{key} must be finite")
            kwargs[key] = want(v)
        parts[table] = cls(**kwargs)
    config = PolicyConfig(**parts)
    _validate(config, source)
    return config


def parse_policy(text: str, *, source: str = "policy") -> PolicyConfig:
    """A `PolicyConfig` from TOML text; keys left out keep their defaults.

    Raises DataError for invalid TOML, an unknown table or key, a value of the wrong type,
    or values that break the rules' logic (negative times, ``max_shot_s <= min_shot_s``,
    ``lead_beats < 1``, ``max_proposals_per_min < 1``, ``expiry_pause_growth < 1``,
    ``energy_influence >= 1``, ``held_repeat_s`` of 0).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{source}: not valid TOML: {exc}") from None
    return policy_from_dict(doc, source=source)


def _validate(config: PolicyConfig, source: str) -> None:
    r = config.rules
    for name, value in config.as_dict()["rules"].items():
        if value < 0:
            raise DataError(f"{source}: rules.{name} must not be negative")
    if r.max_shot_s <= r.min_shot_s:
        raise DataError(f"{source}: rules.max_shot_s must be greater than rules.min_shot_s")
    if r.lead_beats < 1:
        raise DataError(f"{source}: rules.lead_beats must be at least 1")
    if r.clock_period_s <= 0:
        raise DataError(f"{source}: rules.clock_period_s must be positive")
    if r.max_proposals_per_min < 1:
        raise DataError(f"{source}: rules.max_proposals_per_min must be at least 1")
    if r.expiry_pause_growth < 1:
        raise DataError(f"{source}: rules.expiry_pause_growth must be at least 1")
    if r.energy_influence >= 1:
        raise DataError(f"{source}: rules.energy_influence must be less than 1 (1 would allow shots of 0 s)")
    if r.held_repeat_s <= 0:
        raise DataError(f"{source}: rules.held_repeat_s must be positive")


def load_policy(path: str | Path | None = None) -> PolicyConfig:
    """The policy in TOML file ``path``, or the shipped defaults when None.

    Raises InputMissingError when the file does not exist, DataError when it is invalid.
    """
    if path is None:
        return parse_policy(default_policy_text(), source="default_policy.toml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputMissingError(f"no such policy file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read policy file {path}: {exc}") from None
    return parse_policy(text, source=str(path))


# ------------------------------------------------------------------------------ writing
def _toml_value(value: Any) -> str:
    """One TOML value: strings as basic strings (JSON escapes are TOML escapes), numbers,
    booleans, arrays and inline tables. Raises DataError for anything else (None, NaN)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"cannot write {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise DataError(f"cannot write a {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) and key.isascii() else orjson.dumps(key).decode()


def policy_toml(config: PolicyConfig, *, header: str = "", comments: dict[str, str] | None = None) -> str:
    """The TOML text of a whole policy (every key, so the file says everything it means),
    with ``header`` as leading comment lines, optional ``comments`` per ``table.key``, and
    ``[provenance]`` last (None values left out). `parse_policy` reads it back to ``config``."""
    comments = comments or {}
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for table, values in config.as_dict().items():
        lines += ["", f"[{table}]"]
        for key, value in values.items():
            note = comments.get(f"{table}.{key}")
            lines.append(f"{key} = {_toml_value(value)}" + (f"  # {note}" if note else ""))
    if config.provenance:
        lines += ["", "[provenance]"]
        for key, value in config.provenance.items():
            if value is not None:
                lines.append(f"{_toml_key(key)} = {_toml_value(_drop_none(value))}")
    return "\n".join(lines).lstrip("\n") + "\n"


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value if v is not None]
    return value
