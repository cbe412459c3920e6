"""The worker's wait for its next connection, and what it gives back while it waits."""

from __future__ import annotations

import psutil

from wlmd.daemon import handoff, worker
from wlmd.daemon.pool import release_free_memory


def test_a_quiet_channel_gives_free_memory_back_before_the_next_message(monkeypatch):
    ours, supervisor = handoff.channel_pair()
    released: list[bool] = []

    def release() -> None:  # the supervisor speaks only once the worker has released
        released.append(True)
        handoff.send_message(supervisor, handoff.OP_STOP)

    monkeypatch.setattr(worker, "release_free_memory", release)
    assert worker.next_message(ours, 0.05).op == handoff.OP_STOP
    assert released == [True]
    ours.close()
    supervisor.close()


def test_a_waiting_message_is_read_at_once_without_a_release(monkeypatch):
    ours, supervisor = handoff.channel_pair()
    released: list[bool] = []
    monkeypatch.setattr(worker, "release_free_memory", lambda: released.append(True))
    handoff.send_message(supervisor, handoff.OP_STOP)
    assert worker.next_message(ours, 60).op == handoff.OP_STOP
    assert released == []
    ours.close()
    supervisor.close()


def test_release_returns_the_pages_of_freed_heap_blocks():
    """Blocks below the mmap threshold, freed under a live one, stay resident until released."""
    process = psutil.Process()
    blocks = [bytes(100_000) for _ in range(400)]  # 40 MB of heap
    pin = bytes(100_000)  # above them: glibc cannot give them back by shrinking the heap
    del blocks
    before = process.memory_info().rss
    release_free_memory()
    assert before - process.memory_info().rss > 20 << 20
    del pin
