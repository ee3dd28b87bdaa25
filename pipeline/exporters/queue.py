"""The bounded delivery queue of an exporter: SQLite on disk, or in memory.

Rows are serialized snapshot bodies in arrival order (``seq``). A row is
removed only when the sender reports that the Master accepted it, so
whatever was committed before a crash is delivered after the restart. The
queue is bounded by item count and by body bytes. When it is full,
``when_full`` decides:

- ``drop_oldest`` evicts the oldest rows to make room and returns them to
  the caller for counting and logging.
- ``block`` stores the entries anyway, past the bound, and reports how many
  went past it, so a full queue evicts nothing. The bound is enforced by
  admission instead: the exporter reports ``accepting`` False while
  ``is_full()``, so the service rejects new requests. The queue goes past its
  bound only by the snapshots of requests that were accepted before it
  reached the bound.

Durability: the database runs in WAL mode. With ``synchronous: normal`` a
committed row survives a killed process (it is in the WAL file, and the
operating system writes it out), but the last commits can be lost on power
loss or a kernel crash. ``synchronous: full`` syncs the WAL on every commit,
which closes that gap at the cost of one fsync per export call.

With an empty ``directory`` the queue lives in an in-memory SQLite database
with the same bounds and policies, and is lost when the process exits.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

from pipeline.component import ConfigError
from pipeline.config import raise_errors
from pipeline.logs import event

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux
    fcntl = None

WHEN_FULL_POLICIES = ("drop_oldest", "block")
SYNCHRONOUS_MODES = ("normal", "full")
MIB = 1 << 20
SCHEMA_VERSION = 1
WAL_SIZE_LIMIT_BYTES = 4 * MIB
# Pages given back per removal that empties the queue: about 8 MiB with 4 KiB
# pages. This bounds how long the lock that export() also takes is held,
# however large the drained backlog was.
VACUUM_PAGES = 2048

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    enqueued_ns INTEGER NOT NULL,
    body BLOB NOT NULL
)
"""


@dataclass
class QueueConfig:
    """Location and bounds of an exporter's queue.

    ``directory`` contains one SQLite file per exporter id; "" keeps the queue
    in memory (lost on restart). ``max_items`` and ``max_size_mib`` bound
    the queue (``max_size_mib`` counts serialized snapshot bytes; the file
    is a little larger). ``when_full`` is ``drop_oldest`` (evict the oldest
    rows) or ``block`` (store everything and reject new requests while the
    queue is at or over its bound).
    ``synchronous`` is SQLite's setting: ``normal`` or ``full``.
    """

    directory: str = "/var/lib/otelsnap"
    max_items: int = 50_000
    max_size_mib: float = 512.0
    when_full: str = "drop_oldest"
    synchronous: str = "normal"

    def validate(self) -> None:
        errors: list[ConfigError] = []
        if self.max_items < 1:
            errors.append(ConfigError("max_items", f"invalid value {self.max_items}: use 1 or more"))
        if self.max_size_mib <= 0:
            errors.append(ConfigError("max_size_mib", f"invalid value {self.max_size_mib}: use a size above 0"))
        if self.when_full not in WHEN_FULL_POLICIES:
            errors.append(
                ConfigError(
                    "when_full",
                    f"invalid policy {self.when_full!r}: use one of {', '.join(WHEN_FULL_POLICIES)}",
                )
            )
        if self.synchronous not in SYNCHRONOUS_MODES:
            errors.append(
                ConfigError(
                    "synchronous",
                    f"invalid mode {self.synchronous!r}: use one of {', '.join(SYNCHRONOUS_MODES)}",
                )
            )
        raise_errors(errors)


@dataclass(slots=True)
class QueuedItem:
    """One queued snapshot.

    ``seq`` orders the queue (0 for an entry that was never stored);
    ``size`` is ``len(body)``. Rows returned by an eviction carry an empty
    ``body`` but their real ``size``.
    """

    kind: str
    key: str
    time_ns: int
    body: bytes
    seq: int = 0
    enqueued_ns: int = 0
    size: int = 0


@dataclass(slots=True)
class PutResult:
    """The outcome of one ``DiskQueue.put`` besides the stored entries.

    ``evicted``: under ``drop_oldest``, the stored rows removed to make room,
    then the new entries that could not fit even into an empty queue.
    ``over_bound``: under ``block``, how many of the stored entries are past
    ``max_items`` or ``max_bytes``. ``went_over``: this call took the queue
    past its bound, so the queue was within its bound before the call.
    """

    evicted: list[QueuedItem]
    over_bound: int = 0
    went_over: bool = False


class QueueError(RuntimeError):
    """The queue file cannot be used: locked by another process or of a newer format."""


class QueueLocked(QueueError):
    """Another process has the queue file open."""


def queue_path(directory: str, exporter_id: str) -> str:
    """Return the database file of an exporter id; the id is percent-encoded."""
    return os.path.join(directory, quote(exporter_id, safe="") + ".sqlite3")


class DiskQueue:
    """A FIFO of snapshot bodies in SQLite, bounded by items and bytes.

    Thread-safe: the exporter's caller appends while its sender thread reads
    and removes; one connection serves both under a lock.
    """

    def __init__(
        self,
        path: str,
        max_items: int,
        max_bytes: int,
        when_full: str = "drop_oldest",
        synchronous: str = "normal",
        logger: logging.Logger | None = None,
    ) -> None:
        self.path = path
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.when_full = when_full
        self.synchronous = synchronous
        self.log = logger or logging.getLogger("otelsnap.queue")
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._lock_file = None
        self._count = 0
        self._bytes = 0

    @classmethod
    def from_config(
        cls, config: QueueConfig, exporter_id: str, logger: logging.Logger | None = None
    ) -> DiskQueue:
        path = queue_path(config.directory, exporter_id) if config.directory else ""
        return cls(
            path,
            max_items=config.max_items,
            max_bytes=int(config.max_size_mib * MIB),
            when_full=config.when_full,
            synchronous=config.synchronous,
            logger=logger,
        )

    @property
    def persistent(self) -> bool:
        return bool(self.path)

    # --- lifecycle ---------------------------------------------------------

    def open(self) -> None:
        """Open or create the database and load its item count and size.

        Raises QueueLocked when another process uses the same file,
        QueueError for a file of a newer format, and OSError when the
        directory cannot be created.
        """
        if not self.persistent:
            self._db = self._connect(":memory:")
            self._init_schema()
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._acquire_file_lock()
        try:
            self._db = self._connect(self.path)
            self._init_schema()
        except sqlite3.DatabaseError as err:
            # A file that is not a readable SQLite database is set aside, so
            # the exporter keeps running; the log names where it went.
            if self._db is not None:
                self._db.close()
            moved = self._set_aside_corrupt(err)
            self._db = self._connect(self.path)
            self._init_schema()
            event(self.log, "queue_corrupt", logging.ERROR, path=self.path, moved_to=moved, error=err)
        row = self._db.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM snapshots").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

    def close(self) -> None:
        """Close the database; committed rows stay on disk."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def _connect(self, target: str) -> sqlite3.Connection:
        db = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=5.0)
        if target != ":memory:":
            # auto_vacuum must be chosen before the first table exists; it is
            # a no-op on an existing file created with another setting.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.DatabaseError(f"journal_mode is {mode}, expected wal")
            db.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            # Truncate the WAL file to this size after each checkpoint.
            db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
        return db

    def _init_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise QueueError(
                f"queue file {self.path} has format version {version}, newer than this "
                f"otelsnap reads ({SCHEMA_VERSION}); run the newer otelsnap or move the file away"
            )
        self._db.execute(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _acquire_file_lock(self) -> None:
        if fcntl is None:
            return
        handle = open(self.path + ".lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise QueueLocked(
                f"queue file {self.path} is in use by another process; give each "
                f"otelsnap process its own queue.directory"
            ) from None
        self._lock_file = handle

    def _set_aside_corrupt(self, err: Exception) -> str:
        moved = f"{self.path}.corrupt-{int(time.time())}"
        os.replace(self.path, moved)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, moved + suffix)
        return moved

    # --- state -------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def is_full(self) -> bool:
        """True when the queue is at or over ``max_items`` or ``max_bytes``.

        Under ``block`` the queue can be over both, so this stays True until
        the sender has removed rows to below the bound.
        """
        return self._count >= self.max_items or self._bytes >= self.max_bytes

    # --- writing -----------------------------------------------------------

    def put(self, entries: list[QueuedItem], enqueued_ns: int) -> PutResult:
        """Append ``entries`` in order in one transaction.

        Under ``drop_oldest`` the result lists the evicted items: stored rows
        first, then new entries that could not fit even into an empty queue.
        Under ``block`` every entry is stored, also past ``max_items`` and
        ``max_bytes``, and the result counts those past the bound.
        Raises sqlite3.Error when the write fails; then nothing is stored.
        """
        if not entries:
            return PutResult([])
        new_bytes = sum(len(e.body) for e in entries)
        with self._lock:
            db = self._require_open()
            over_items = self._count + len(entries) - self.max_items
            over_bytes = self._bytes + new_bytes - self.max_bytes
            evicted: list[QueuedItem] = []
            rejected: list[QueuedItem] = []
            over_bound = 0
            went_over = False
            if over_items > 0 or over_bytes > 0:
                if self.when_full == "block":
                    over_bound = self._count_over_bound(entries)
                    went_over = self._count <= self.max_items and self._bytes <= self.max_bytes
                else:
                    entries, rejected = self._fit_new(entries)
                    new_bytes = sum(len(e.body) for e in entries)
                    evicted = self._oldest(
                        self._count + len(entries) - self.max_items,
                        self._bytes + new_bytes - self.max_bytes,
                    )
            rows = [(e.kind, e.key, e.time_ns, enqueued_ns, e.body) for e in entries]
            freed = sum(item.size for item in evicted)
            db.execute("BEGIN IMMEDIATE")
            try:
                if evicted:
                    self._delete_seqs(db, [item.seq for item in evicted])
                db.executemany(
                    "INSERT INTO snapshots (kind, key, time_ns, enqueued_ns, body) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count += len(rows) - len(evicted)
            self._bytes += new_bytes - freed
        for item in rejected:
            item.enqueued_ns = enqueued_ns
        return PutResult(evicted + rejected, over_bound, went_over)

    def _count_over_bound(self, entries: list[QueuedItem]) -> int:
        """Count the entries that, appended in order, take the queue past its bound.

        Count and size only grow along ``entries``, so these are a tail of it.
        """
        count, size = self._count, self._bytes
        for index, entry in enumerate(entries):
            count += 1
            size += len(entry.body)
            if count > self.max_items or size > self.max_bytes:
                return len(entries) - index
        return 0

    def _fit_new(self, entries: list[QueuedItem]) -> tuple[list[QueuedItem], list[QueuedItem]]:
        """Split new entries into those that fit an empty queue and the older rest."""
        kept: list[QueuedItem] = []
        kept_bytes = 0
        for entry in reversed(entries):
            size = len(entry.body)
            if len(kept) + 1 > self.max_items or kept_bytes + size > self.max_bytes:
                break
            kept.append(entry)
            kept_bytes += size
        kept.reverse()
        rejected = entries[: len(entries) - len(kept)]
        for entry in rejected:
            entry.size = len(entry.body)
            entry.body = b""
        return kept, rejected

    def _oldest(self, over_items: int, over_bytes: int) -> list[QueuedItem]:
        """Select the oldest rows whose removal frees ``over_items`` and ``over_bytes``."""
        out: list[QueuedItem] = []
        if over_items <= 0 and over_bytes <= 0:
            return out
        freed = 0
        cursor = self._db.execute(
            "SELECT seq, kind, key, time_ns, enqueued_ns, length(body) FROM snapshots ORDER BY seq"
        )
        for seq, kind, key, time_ns, enqueued_ns, size in cursor:
            out.append(QueuedItem(kind, key, time_ns, b"", seq, enqueued_ns, size))
            freed += size
            if len(out) >= over_items and freed >= over_bytes:
                break
        cursor.close()
        return out

    # --- reading and removing ----------------------------------------------

    def peek(self, max_items: int, max_bytes: int) -> list[QueuedItem]:
        """Return the oldest items in order, up to ``max_items`` and ``max_bytes``.

        The first item is returned even when it alone exceeds ``max_bytes``.
        """
        out: list[QueuedItem] = []
        with self._lock:
            db = self._require_open()
            total = 0
            cursor = db.execute(
                "SELECT seq, kind, key, time_ns, enqueued_ns, body FROM snapshots ORDER BY seq LIMIT ?",
                (max_items,),
            )
            for seq, kind, key, time_ns, enqueued_ns, body in cursor:
                size = len(body)
                if out and total + size > max_bytes:
                    break
                out.append(QueuedItem(kind, key, time_ns, body, seq, enqueued_ns, size))
                total += size
            cursor.close()
        return out

    def keys(self, limit: int) -> tuple[list[str], int]:
        """Return up to ``limit`` distinct keys in queue order, and the number of distinct keys."""
        with self._lock:
            db = self._require_open()
            shown = [
                key
                for (key,) in db.execute(
                    "SELECT key FROM snapshots GROUP BY key ORDER BY min(seq) LIMIT ?", (limit,)
                )
            ]
            (total,) = db.execute("SELECT count(DISTINCT key) FROM snapshots").fetchone()
        return shown, int(total)

    def remove(self, seqs: list[int]) -> int:
        """Delete the rows with these ``seq`` values; return how many existed."""
        if not seqs:
            return 0
        with self._lock:
            db = self._require_open()
            db.execute("BEGIN IMMEDIATE")
            try:
                removed, freed = self._delete_seqs(db, seqs)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count -= removed
            self._bytes -= freed
            if self._count == 0 and self.persistent:
                # Give the pages of a drained backlog back to the file system.
                # executescript steps the pragma to completion; execute() would
                # free a single page.
                db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
        return removed

    @staticmethod
    def _delete_seqs(db: sqlite3.Connection, seqs: list[int]) -> tuple[int, int]:
        removed = freed = 0
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sizes = db.execute(
                f"DELETE FROM snapshots WHERE seq IN ({marks}) RETURNING length(body)", chunk
            ).fetchall()
            removed += len(sizes)
            freed += sum(size for (size,) in sizes)
        return removed, freed

    def _require_open(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("queue is not open")
        return self._db
