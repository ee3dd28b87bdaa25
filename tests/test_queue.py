"""The on-disk delivery queue: order, bounds, policies, persistence, locking."""

from __future__ import annotations

import sqlite3

import pytest

from pipeline.component import ConfigError
from pipeline.exporters.queue import (
    DiskQueue,
    QueueConfig,
    QueuedItem,
    QueueError,
    QueueLocked,
    queue_path,
)


def entry(key: str, time_ns: int, body: bytes = b'{"x":1}') -> QueuedItem:
    return QueuedItem("node", key, time_ns, body)


def open_queue(path: str, max_items: int = 100, max_bytes: int = 1 << 20, when_full: str = "drop_oldest") -> DiskQueue:
    queue = DiskQueue(path, max_items=max_items, max_bytes=max_bytes, when_full=when_full)
    queue.open()
    return queue


def stored_rows(path) -> list[tuple[str, int, int]]:
    """(key, time_ns, body length) of every row, read with an independent connection."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT key, time_ns, length(body) FROM snapshots ORDER BY seq").fetchall()


def test_queue_fifo_order_and_remove(tmp_path):
    queue = open_queue(str(tmp_path / "q.sqlite3"))
    queue.put([entry("desk-zero", 1), entry("desk-one", 1)], enqueued_ns=100)
    queue.put([entry("desk-zero", 2, b'{"x":22}')], enqueued_ns=200)

    rows = queue.peek(10, 1 << 20)
    assert [(r.key, r.time_ns) for r in rows] == [("desk-zero", 1), ("desk-one", 1), ("desk-zero", 2)]
    assert [r.enqueued_ns for r in rows] == [100, 100, 200]
    assert rows[2].body == b'{"x":22}'
    assert len(queue) == 3
    assert queue.size_bytes == 7 + 7 + 8

    assert queue.remove([rows[0].seq, rows[1].seq]) == 2
    assert len(queue) == 1
    assert queue.size_bytes == 8
    assert [r.key for r in queue.peek(10, 1 << 20)] == ["desk-zero"]
    # Removing a row that is gone already counts nothing.
    assert queue.remove([rows[0].seq]) == 0
    queue.close()


def test_queue_peek_limits(tmp_path):
    queue = open_queue(str(tmp_path / "q.sqlite3"))
    queue.put([entry(f"n{i}", i, b"x" * 100) for i in range(5)], enqueued_ns=1)
    assert len(queue.peek(2, 1 << 20)) == 2
    assert len(queue.peek(10, 250)) == 2
    # The first row comes back even when it alone is over the byte limit.
    assert len(queue.peek(10, 10)) == 1
    queue.close()


def test_queue_rows_survive_reopen(tmp_path):
    path = str(tmp_path / "q.sqlite3")
    queue = open_queue(path)
    queue.put([entry("raspi-zero", 7, b'{"v":9223372036854775807}')], enqueued_ns=5)
    queue.close()

    again = open_queue(path)
    assert len(again) == 1
    assert again.size_bytes == len(b'{"v":9223372036854775807}')
    row = again.peek(1, 1 << 20)[0]
    assert (row.kind, row.key, row.time_ns, row.enqueued_ns) == ("node", "raspi-zero", 7, 5)
    assert row.body == b'{"v":9223372036854775807}'
    again.close()


def test_queue_database_uses_wal(tmp_path):
    path = str(tmp_path / "q.sqlite3")
    queue = open_queue(path)
    queue.put([entry("desk-two", 1)], enqueued_ns=1)
    # Read with an independent connection while the queue is open.
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("SELECT key FROM snapshots").fetchall() == [("desk-two",)]
    other.close()
    queue.close()


def test_drop_oldest_evicts_by_items(tmp_path):
    queue = open_queue(str(tmp_path / "q.sqlite3"), max_items=3)
    queue.put([entry("a", 1), entry("b", 2), entry("c", 3)], enqueued_ns=10)
    result = queue.put([entry("d", 4), entry("e", 5)], enqueued_ns=20)
    evicted = result.evicted

    assert result.over_bound == 0
    assert [(r.key, r.time_ns, r.enqueued_ns) for r in evicted] == [("a", 1, 10), ("b", 2, 10)]
    assert [r.size for r in evicted] == [7, 7]
    assert [r.key for r in queue.peek(10, 1 << 20)] == ["c", "d", "e"]
    assert len(queue) == 3
    assert queue.size_bytes == 21
    queue.close()


def test_drop_oldest_evicts_by_bytes(tmp_path):
    queue = open_queue(str(tmp_path / "q.sqlite3"), max_bytes=250)
    queue.put([entry("a", 1, b"x" * 100), entry("b", 2, b"x" * 100)], enqueued_ns=1)
    evicted = queue.put([entry("c", 3, b"x" * 100)], enqueued_ns=2).evicted
    assert [r.key for r in evicted] == ["a"]
    assert queue.size_bytes == 200
    queue.close()


def test_drop_oldest_batch_larger_than_queue(tmp_path):
    queue = open_queue(str(tmp_path / "q.sqlite3"), max_items=2)
    queue.put([entry("old", 0)], enqueued_ns=1)
    evicted = queue.put([entry("a", 1), entry("b", 2), entry("c", 3)], enqueued_ns=2).evicted
    # The stored row goes first, then the oldest new entry, which never got stored.
    assert [(r.key, r.seq == 0) for r in evicted] == [("old", False), ("a", True)]
    assert [r.key for r in queue.peek(10, 1 << 20)] == ["b", "c"]
    queue.close()


def test_block_stores_past_item_bound(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = open_queue(str(path), max_items=3, when_full="block")
    first = queue.put([entry("a", 1), entry("b", 2)], enqueued_ns=1)
    assert (first.evicted, first.over_bound, first.went_over) == ([], 0, False)
    assert not queue.is_full()

    # max_items 3 with 2 stored: c fills the queue, d and e go past the bound.
    result = queue.put([entry("c", 3), entry("d", 4), entry("e", 5)], enqueued_ns=2)
    assert result.evicted == []
    assert result.over_bound == 2
    assert result.went_over is True
    assert stored_rows(path) == [("a", 1, 7), ("b", 2, 7), ("c", 3, 7), ("d", 4, 7), ("e", 5, 7)]
    assert len(queue) == 5
    assert queue.size_bytes == 5 * 7
    assert queue.is_full()

    # A call while the queue is past its bound is stored whole, and is not
    # the call that took the queue past it.
    later = queue.put([entry("f", 6)], enqueued_ns=3)
    assert (later.evicted, later.over_bound, later.went_over) == ([], 1, False)
    assert len(stored_rows(path)) == 6
    queue.close()


def test_block_full_until_below_bound(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = open_queue(str(path), max_items=3, when_full="block")
    queue.put([entry(key, i) for i, key in enumerate("abcde")], enqueued_ns=1)
    rows = queue.peek(10, 1 << 20)

    queue.remove([rows[0].seq, rows[1].seq])
    # 3 rows left: at the bound is still full.
    assert len(stored_rows(path)) == 3
    assert queue.is_full()
    queue.remove([rows[2].seq])
    assert len(stored_rows(path)) == 2
    assert not queue.is_full()

    # Back within the bound, the next call past it is a new fill.
    result = queue.put([entry("f", 6), entry("g", 7)], enqueued_ns=2)
    assert (result.over_bound, result.went_over) == (1, True)
    assert [key for key, _, _ in stored_rows(path)] == ["d", "e", "f", "g"]
    queue.close()


def test_block_call_from_bound_goes_over(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = open_queue(str(path), max_items=2, when_full="block")
    at_bound = queue.put([entry("a", 1), entry("b", 2)], enqueued_ns=1)
    # Exactly at the bound: full, but nothing is past it yet.
    assert (at_bound.over_bound, at_bound.went_over) == (0, False)
    assert queue.is_full()

    result = queue.put([entry("c", 3)], enqueued_ns=2)
    assert (result.evicted, result.over_bound, result.went_over) == ([], 1, True)
    assert len(stored_rows(path)) == 3
    queue.close()


def test_block_stores_past_byte_bound(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = open_queue(str(path), max_bytes=250, when_full="block")
    queue.put([entry("a", 1, b"x" * 100), entry("b", 2, b"x" * 100)], enqueued_ns=1)
    assert not queue.is_full()

    # 200 + 100 is past 250 already, so both new entries are over the bound.
    result = queue.put([entry("c", 3, b"x" * 100), entry("d", 4, b"x" * 100)], enqueued_ns=2)
    assert (result.evicted, result.over_bound, result.went_over) == ([], 2, True)
    assert stored_rows(path) == [("a", 1, 100), ("b", 2, 100), ("c", 3, 100), ("d", 4, 100)]
    assert queue.size_bytes == 400
    assert queue.is_full()

    rows = queue.peek(10, 1 << 20)
    queue.remove([rows[0].seq, rows[1].seq])
    # 200 bytes: below 250, so there is room again.
    assert not queue.is_full()
    queue.close()


def test_block_empty_queue_takes_oversized_batch(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = open_queue(str(path), max_items=2, when_full="block")
    result = queue.put([entry("a", 1), entry("b", 2), entry("c", 3)], enqueued_ns=1)
    assert (result.evicted, result.over_bound, result.went_over) == ([], 1, True)
    assert [key for key, _, _ in stored_rows(path)] == ["a", "b", "c"]
    queue.close()


def test_block_count_past_bound_survives_reopen(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = open_queue(str(path), max_items=2, when_full="block")
    queue.put([entry("a", 1), entry("b", 2), entry("c", 3)], enqueued_ns=1)
    queue.close()

    again = open_queue(str(path), max_items=2, when_full="block")
    assert len(again) == 3
    assert again.is_full()
    again.close()


def test_queue_file_lock(tmp_path):
    path = str(tmp_path / "q.sqlite3")
    first = open_queue(path)
    with pytest.raises(QueueLocked, match="in use by another process"):
        open_queue(path)
    first.close()
    # Once closed, the file can be opened again.
    open_queue(path).close()


def test_corrupt_file_set_aside(tmp_path):
    path = tmp_path / "q.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    queue = open_queue(str(path))
    assert len(queue) == 0
    queue.put([entry("a", 1)], enqueued_ns=1)
    assert len(queue) == 1
    moved = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(moved) == 1
    queue.close()


def test_newer_format_rejected(tmp_path):
    path = str(tmp_path / "q.sqlite3")
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    queue = DiskQueue(path, max_items=10, max_bytes=1000)
    with pytest.raises(QueueError, match="format version 99"):
        queue.open()


def test_in_memory_queue():
    queue = DiskQueue("", max_items=2, max_bytes=1000)
    queue.open()
    assert not queue.persistent
    evicted = queue.put([entry("a", 1), entry("b", 2), entry("c", 3)], enqueued_ns=1).evicted
    assert [r.key for r in evicted] == ["a"]
    assert [r.key for r in queue.peek(10, 1000)] == ["b", "c"]
    queue.close()


def test_queue_path_encodes_id(tmp_path):
    assert queue_path(str(tmp_path), "master") == str(tmp_path / "master.sqlite3")
    assert queue_path(str(tmp_path), "master/backup") == str(tmp_path / "master%2Fbackup.sqlite3")


def test_drained_queue_shrinks_file(tmp_path):
    path = tmp_path / "q.sqlite3"
    queue = open_queue(str(path), max_items=5000, max_bytes=64 << 20)
    queue.put([entry(f"n{i}", i, b"x" * 4000) for i in range(1000)], enqueued_ns=1)
    queue.close()
    full_size = path.stat().st_size
    queue = open_queue(str(path), max_items=5000, max_bytes=64 << 20)
    queue.remove([r.seq for r in queue.peek(1000, 64 << 20)])
    queue.close()
    assert full_size > 4_000_000
    assert path.stat().st_size < full_size // 10


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"max_items": 0}, "max_items"),
        ({"max_size_mib": 0}, "max_size_mib"),
        ({"when_full": "drop_newest"}, "when_full"),
        ({"synchronous": "off"}, "synchronous"),
    ],
)
def test_queue_config_errors(options, path):
    with pytest.raises(ConfigError) as info:
        QueueConfig(**options).validate()
    assert info.value.path == path
