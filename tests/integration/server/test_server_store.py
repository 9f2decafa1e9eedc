"""The job store's contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest

from server.api.events import oxen_payload
from server.queue import FAILED, PROCESSING, QUEUED, SUCCEEDED, JobStore, NewJob, WouldWait
from serverkit import lock_exclusively

IMAGE = b"\x89PNG fake image bytes"
SHA = hashlib.sha256(IMAGE).hexdigest()


@pytest.fixture
def store(store_url):
    store = JobStore(store_url)
    yield store
    store.close()


def new(owner: str = "alice", **params) -> NewJob:
    return NewJob(owner=owner, model="m", params={"prompt": "p", "seed": 1, **params}, input_sha256=SHA)


def test_enqueue_is_durable_and_visible_to_a_fresh_connection(store, store_url):
    created = store.enqueue([new(), new()], IMAGE, now=100.0)
    assert [job.status for job in created] == [QUEUED, QUEUED]
    other = JobStore(store_url)  # another process's view
    try:
        job = other.get(created[0].id)
        assert job is not None and job.status == QUEUED and job.enqueued_at == 100.0
        assert job.params == {"prompt": "p", "seed": 1}
        assert other.input_image(SHA) == IMAGE
    finally:
        other.close()


def test_claim_is_fifo_and_exclusive(store):
    ids = [job.id for job in store.enqueue([new(), new("bob"), new()], IMAGE)]
    claimed = [store.claim_next(f"w{i}", 30) for i in range(3)]
    assert [job.id for job in claimed] == ids
    assert all(job.status == PROCESSING and job.attempts == 1 for job in claimed)
    assert store.claim_next("w9", 30) is None


def test_fair_fifo_round_robin_between_keys(store):
    a1, a2, a3 = store.enqueue([new("alice"), new("alice"), new("alice")], IMAGE, now=1.0)
    (b1,) = store.enqueue([new("bob")], IMAGE, now=2.0)
    (c1,) = store.enqueue([new("carol")], IMAGE, now=3.0)
    order = [store.claim_next("w", 30, now=10.0 + i).id for i in range(5)]
    # FIFO within a key; a key that queued first cannot hold the others back behind all its jobs.
    assert order == [a1.id, b1.id, c1.id, a2.id, a3.id]


def test_concurrent_claims_never_share_a_job(store):
    store.enqueue([new() for _ in range(12)], IMAGE)
    got: list[str] = []
    lock = threading.Lock()

    def claim(worker: str) -> None:
        while (job := store.claim_next(worker, 30)) is not None:
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 12 and len(set(got)) == 12


def test_owner_scoping_and_list_filters(store):
    a1, a2 = store.enqueue([new(), new()], IMAGE)
    (b1,) = store.enqueue([new("bob")], IMAGE)
    assert store.get(a1.id, owner="bob") is None
    assert store.get(b1.id, owner="bob").id == b1.id
    assert [j.id for j in store.list(owner="alice")] == [a1.id, a2.id]
    job = store.claim_next("w", 30)
    store.complete(job.id, "w", "results/x.mp4", {"seed": 1})
    assert [j.id for j in store.list(owner="alice")] == [a2.id]  # default: queued + processing only
    assert [j.id for j in store.list(owner="alice", statuses=[SUCCEEDED])] == [a1.id]
    assert len(store.list(owner="alice", statuses=None)) == 2
    assert store.list(owner="alice", statuses=None, model="other") == []
    assert store.cancel(b1.id, owner="alice") is None  # someone else's job is "unknown"


def test_complete_and_fail_only_by_the_owning_worker(store):
    store.enqueue([new(), new()], IMAGE)
    first = store.claim_next("w1", 30)
    assert not store.complete(first.id, "intruder", "x.mp4", {})
    assert store.complete(first.id, "w1", "x.mp4", {"seed": 1})
    done = store.get(first.id)
    assert done.status == SUCCEEDED and done.progress == 1.0 and done.result_path == "x.mp4"
    second = store.claim_next("w1", 30)
    assert store.fail(second.id, "w1", "Out of memory")
    assert store.get(second.id).status == FAILED and store.get(second.id).error_message == "Out of memory"


def test_cancel_queued_processing_and_ended(store):
    queued, running, ended = store.enqueue([new(), new(), new()], IMAGE)
    store.claim_next("w", 30)  # queued -> processing
    store.cancel(queued.id)
    assert store.get(queued.id).status == "cancelled"
    running_job = store.claim_next("w", 30)
    assert running_job.id == running.id
    assert store.is_still_mine(running.id, "w")
    store.cancel(running.id)
    assert store.get(running.id).status == "cancelled"
    assert not store.is_still_mine(running.id, "w")  # the worker's per-step check sees it
    assert not store.heartbeat(running.id, "w", 30)
    assert not store.complete(running.id, "w", "x.mp4", {})  # a late finish cannot overwrite
    last = store.claim_next("w", 30)
    store.complete(last.id, "w", "x.mp4", {})
    after = store.cancel(ended.id)
    assert after.status == SUCCEEDED  # ended jobs keep their state
    assert store.cancel("no-such-id") is None


def test_lease_expiry_retries_once_then_fails(store):
    (job,) = store.enqueue([new()], IMAGE, now=0.0)
    store.claim_next("w1", 10, now=1.0)
    assert store.heartbeat(job.id, "w1", 10, progress=0.5, stage="stage1", now=5.0)
    assert store.recover_abandoned(now=14.0) == []  # lease runs to 15
    assert store.recover_abandoned(now=16.0) == [job.id]
    retried = store.get(job.id)
    assert retried.status == QUEUED and retried.attempts == 1 and retried.worker_id is None
    store.claim_next("w2", 10, now=20.0)
    assert store.recover_abandoned(now=31.0) == [job.id]
    failed = store.get(job.id)
    assert failed.status == FAILED and failed.attempts == 2
    assert "retried once" in failed.error_message and "heartbeat" in failed.error_message


def test_dead_worker_recovery_by_id_and_requeue_on_shutdown(store):
    a, b = store.enqueue([new(), new()], IMAGE)
    store.claim_next("dead", 600)
    assert store.recover_abandoned(worker_id="dead", reason="its worker process died (killed by signal 9)") == [a.id]
    assert store.get(a.id).status == QUEUED
    again = store.claim_next("w2", 600)
    assert again.id == a.id and again.attempts == 2  # FIFO position kept
    assert store.requeue(a.id, "w2")  # graceful stop does not count as an attempt
    assert store.get(a.id).status == QUEUED and store.get(a.id).attempts == 1
    assert b.id != a.id


def test_events_are_written_with_the_state_changes(store):
    start = store.last_event_id()
    (job,) = store.enqueue([new()], IMAGE)
    store.claim_next("w", 30)
    store.heartbeat(job.id, "w", 30, progress=0.3, stage="stage1", emit_progress=True, step=(5, 8))
    store.complete(job.id, "w", "x.mp4", {})
    names = [(e.name, e.payload["status"]) for e in store.events_after(start)]
    progress = store.events_after(start)[1].payload
    assert progress == {"status": PROCESSING, "progress": 0.3, "stage": "stage1", "step": 5, "total": 8}
    assert names == [("media_generation_started", PROCESSING), ("media_generation_progress", PROCESSING),
                     ("media_generation_completed", SUCCEEDED)]
    completed = store.events_since(0, "alice", ["media_generation_completed"])
    assert completed[-1].payload == {"status": SUCCEEDED, "model": "m"}  # facts; the API builds Oxen's body
    assert oxen_payload(completed[-1]) == {"generation_id": job.id, "status": SUCCEEDED, "media_type": "video",
                                           "model": "m"}
    assert store.events_since(0, "bob", ["media_generation_completed"]) == []


def test_retention_marks_records_and_keeps_them(store):
    (job,) = store.enqueue([new()], IMAGE, now=0.0)
    store.claim_next("w", 30, now=1.0)
    store.complete(job.id, "w", "results/x.mp4", {}, now=2.0)
    assert [j.id for j in store.expired_results(older_than=3.0)] == [job.id]
    store.mark_result_deleted(job.id, "deleted by retention", now=4.0)
    kept = store.get(job.id)
    assert kept.status == SUCCEEDED and kept.result_deleted_at == 4.0 and kept.error_message == "deleted by retention"
    assert store.expired_results(older_than=10.0) == []
    assert store.prune_inputs(older_than=1e12) == 1


def test_workers_registry(store):
    store.register_worker("w1", "cpu", 123, False, False, None, now=10.0)
    store.register_worker("w1", "cpu", 123, True, True, "tiny", now=11.0)
    (row,) = store.live_workers(max_age=5, now=12.0)
    assert row["ready"] and row["smoke_test"] and row["notice"] == "tiny"
    assert store.live_workers(max_age=5, now=30.0) == []
    store.remove_worker("w1")
    assert store.live_workers(max_age=1e9) == []


def test_get_nowait_reads_a_sqlite_file_and_defers_a_network_store(store, store_url):
    """The API's in-loop status read: on SQLite the same answer as `get`; PostgreSQL goes to a thread."""
    (job,) = store.enqueue([new()], IMAGE)
    if store_url.startswith("postgresql"):
        with pytest.raises(WouldWait):
            store.get_nowait(job.id, owner="alice")
        return
    assert store.get_nowait(job.id, owner="alice") == store.get(job.id, owner="alice")
    assert store.get_nowait(job.id) == store.get(job.id)
    assert store.get_nowait(job.id, owner="bob") is None and store.get_nowait("no-such-id") is None


def test_get_nowait_sees_every_committed_change_at_once(tmp_path):
    """The quick reader keeps one connection per thread: it must never read from an old snapshot."""
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    (job,) = store.enqueue([new()], IMAGE)
    assert store.get_nowait(job.id).status == "queued"
    claimed = store.claim_next("w1", lease_seconds=30)
    assert store.get_nowait(job.id) == claimed  # every column, decoded as `get` decodes it
    store.cancel(job.id)
    assert store.get_nowait(job.id).status == "cancelled" == store.get(job.id).status
    other = JobStore(store.url)  # another process's writes (its own engine) are seen too
    (second,) = other.enqueue([new()], IMAGE)
    assert store.get_nowait(second.id) == other.get(second.id)
    other.close()
    store.close()


QUICK_READS = {"get_nowait": lambda store, job: store.get_nowait(job.id, owner="alice"),
               "page_nowait": lambda store, job: store.page_nowait(owner="alice")[0][0]}


@pytest.mark.parametrize("read", QUICK_READS.values(), ids=QUICK_READS.keys())
def test_quick_reads_give_up_at_once_on_a_locked_sqlite_file(tmp_path, read):
    """A file no reader may open (exclusive locking mode, a write in progress): `WouldWait` within
    milliseconds, where `get` or `page` would wait out its 10 s busy timeout on the event loop."""
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    (job,) = store.enqueue([new()], IMAGE)
    store.close()  # pooled connections would keep the holder below from its exclusive lock
    release = lock_exclusively(tmp_path / "jobs.sqlite3")
    try:
        started = time.monotonic()
        with pytest.raises(WouldWait):
            read(store, job)
        assert time.monotonic() - started < 1.0
    finally:
        release()
    assert read(store, job).id == job.id
    store.close()


def test_page_nowait_answers_as_page_on_a_sqlite_file_and_defers_a_network_store(store, store_url):
    """The list routes' in-loop read: the same page as `page` on SQLite; PostgreSQL goes to a thread."""
    created = store.enqueue([new() for _ in range(3)], IMAGE)
    if store_url.startswith("postgresql"):
        with pytest.raises(WouldWait):
            store.page_nowait(owner="alice")
        return
    for kwargs in ({}, {"limit": 2}, {"offset": 1, "limit": 1, "newest_first": True}, {"statuses": ["queued"]},
                   {"owner": "bob"}):
        assert store.page_nowait(**kwargs) == store.page(**kwargs)
    assert [job.id for job in store.page_nowait(owner="alice")[0]] == [job.id for job in created]


def test_page_totals_with_and_without_the_count_query(store):
    created = store.enqueue([new() for _ in range(3)], IMAGE)
    ids = [job.id for job in created]
    for offset, limit, page_ids in ((0, 10, ids), (0, 2, ids[:2]), (2, 2, ids[2:]), (3, 2, []), (9, 2, [])):
        found, total = store.page(owner="alice", statuses=None, offset=offset, limit=limit)
        assert ([job.id for job in found], total) == (page_ids, 3), (offset, limit)
    assert store.page(owner="bob", statuses=None, limit=5) == ([], 0)
