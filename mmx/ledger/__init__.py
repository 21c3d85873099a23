"""The production ledger: every event in a durable SQLite file, plus production projections.

- `Ledger` (`mmx.ledger.store`): open a file, write batches, read events after a seq.
- `push_stream` (`mmx.ledger.ingest`): a JSON Lines stream into the ledger in batches that
  commit on N lines or T ms.
- `mmx.ledger.queries`: sessions, one session's summary, the cut list.
- `mmx.ledger.export`: the cut list as jsonl, csv, OpenTimelineIO or CMX 3600 EDL.
- `mmx.ledger.follow`: wait for new commits without busy polling (``tail -f``).
- `mmx.ledger.schema`: the versioned migrations (append new ones to ``MIGRATIONS``).

The names below are loaded on first use (PEP 562), so that a command importing
``mmx.ledger.queries`` does not pay for the ingest path at start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmx.ledger.ingest import push_stream
    from mmx.ledger.store import BatchResult, Ledger, PushStats, StoredEvent

__all__ = ["BatchResult", "Ledger", "PushStats", "StoredEvent", "push_stream"]

_HOMES = {"push_stream": "mmx.ledger.ingest", "BatchResult": "mmx.ledger.store", "Ledger": "mmx.ledger.store",
          "PushStats": "mmx.ledger.store", "StoredEvent": "mmx.ledger.store"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mmx.ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
