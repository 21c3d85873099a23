"""The production ledger: every event in a durable SQLite file, plus production projections.

- `Ledger` (`mmx.ledger.store`): open a file, write batches, read events after a seq.
- `push_stream` (`mmx.ledger.ingest`): a JSON Lines stream into the ledger in batches that
  commit on N lines or T ms.
- `mmx.ledger.queries`: sessions, one session's summary, the cut list.
- `mmx.ledger.export`: the cut list as jsonl, csv, OpenTimelineIO or CMX 3600 EDL.
- `mmx.ledger.follow`: wait for new commits without busy polling (``tail -f``).
- `mmx.ledger.schema`: the versioned migrations (append new ones to ``MIGRATIONS``).
"""

from mmx.ledger.ingest import push_stream
from mmx.ledger.store import BatchResult, Ledger, PushStats, StoredEvent

__all__ = ["BatchResult", "Ledger", "PushStats", "StoredEvent", "push_stream"]
