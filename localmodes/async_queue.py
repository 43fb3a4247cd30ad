"""The async endpoint's queue, persisted in sqlite so a restart loses nothing.

SageMaker keeps accepted async requests in an internal queue until an
instance takes them. Here each request is a row that moves
``queued -> running -> done | failed``. A request that was ``running`` when
the service died is put back to ``queued`` when it starts again: it is sent
to the server once more (at-least-once, like SNS delivery), never dropped.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    inference_id      TEXT NOT NULL,
    endpoint_name     TEXT NOT NULL,
    input_location    TEXT NOT NULL,
    content_type      TEXT,
    accept            TEXT,
    custom_attributes TEXT,
    output_location   TEXT NOT NULL,
    failure_location  TEXT NOT NULL,
    ttl_seconds       REAL NOT NULL,
    timeout_seconds   REAL NOT NULL,
    state             TEXT NOT NULL,
    received_time     REAL NOT NULL,
    started_time      REAL,
    finished_time     REAL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    failure_reason    TEXT
);
CREATE INDEX IF NOT EXISTS requests_state ON requests (state, seq);
CREATE INDEX IF NOT EXISTS requests_id ON requests (inference_id);
"""


@dataclass(frozen=True)
class Request:
    seq: int
    inference_id: str
    endpoint_name: str
    input_location: str
    content_type: Optional[str]
    accept: Optional[str]
    custom_attributes: Optional[str]
    output_location: str
    failure_location: str
    ttl_seconds: float
    timeout_seconds: float
    state: str
    received_time: float
    started_time: Optional[float]
    finished_time: Optional[float]
    attempts: int
    failure_reason: Optional[str]


class Queue:
    """A FIFO of async requests in one sqlite file, safe to share between threads."""

    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection behind a lock: the service is one process, and sqlite
        # serialises writers anyway. WAL + synchronous=FULL: an accepted request
        # is on disk before the 202 goes out.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def requeue_running(self) -> int:
        """Put back requests a previous run was processing when it stopped; how many."""
        with self._lock:
            return self._db.execute("UPDATE requests SET state=?, started_time=NULL WHERE state=?",
                                    (QUEUED, RUNNING)).rowcount

    def enqueue(self, *, inference_id: str, endpoint_name: str, input_location: str,
                content_type: Optional[str], accept: Optional[str], custom_attributes: Optional[str],
                output_location: str, failure_location: str, ttl_seconds: float,
                timeout_seconds: float) -> Request:
        with self._lock:
            row = self._db.execute(
                "INSERT INTO requests (inference_id, endpoint_name, input_location, content_type, accept,"
                " custom_attributes, output_location, failure_location, ttl_seconds, timeout_seconds, state,"
                " received_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) RETURNING *",
                (inference_id, endpoint_name, input_location, content_type, accept, custom_attributes,
                 output_location, failure_location, ttl_seconds, timeout_seconds, QUEUED, time.time()),
            ).fetchone()
        return Request(**dict(row))

    def claim_next(self) -> Optional[Request]:
        """The oldest queued request, now marked running; None when the queue is empty."""
        with self._lock:
            row = self._db.execute(
                "UPDATE requests SET state=?, started_time=?, attempts=attempts+1"
                " WHERE seq = (SELECT seq FROM requests WHERE state=? ORDER BY seq LIMIT 1) RETURNING *",
                (RUNNING, time.time(), QUEUED),
            ).fetchone()
        return Request(**dict(row)) if row else None

    def release(self, seq: int, count_attempt: bool = False) -> None:
        """Give a running request back to the queue. ``count_attempt`` False: the server had no
        capacity for it, so the attempt is taken back; True: it was tried (and broke), so it counts."""
        taken_back = 0 if count_attempt else 1
        with self._lock:
            self._db.execute("UPDATE requests SET state=?, started_time=NULL, attempts=attempts-? WHERE seq=?",
                             (QUEUED, taken_back, seq))

    def finish(self, seq: int, state: str, failure_reason: Optional[str] = None) -> None:
        assert state in (DONE, FAILED)
        with self._lock:
            self._db.execute("UPDATE requests SET state=?, finished_time=?, failure_reason=? WHERE seq=?",
                             (state, time.time(), failure_reason, seq))

    def latest(self, inference_id: str) -> Optional[Request]:
        """The most recent request with this id (ids may be reused, as with SageMaker)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM requests WHERE inference_id=? ORDER BY seq DESC LIMIT 1",
                                   (inference_id,)).fetchone()
        return Request(**dict(row)) if row else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall()
        counts = {QUEUED: 0, RUNNING: 0, DONE: 0, FAILED: 0}
        counts.update({state: n for state, n in rows})
        return counts

    def backlog(self) -> int:
        """ApproximateBacklogSize: requests queued or being processed, as SageMaker counts them."""
        counts = self.counts()
        return counts[QUEUED] + counts[RUNNING]

    def oldest_pending_time(self) -> Optional[float]:
        """When the oldest request still queued or running was received (None if none is)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(received_time) FROM requests WHERE state IN (?, ?)",
                                   (QUEUED, RUNNING)).fetchone()
        return row[0]
