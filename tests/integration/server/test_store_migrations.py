"""Schema migrations: a database made by the pre-migration code is upgraded with its jobs intact,
and several nodes migrating one database at once end at the head revision together."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from sqlalchemy import text

from server.queue import PROCESSING, QUEUED, SUCCEEDED, JobStore
from server.queue.schema import current_revision, head_revision, migrate
from server.queue.tables import make_engine

BEFORE = Path(__file__).resolve().parent / "schema_before_migrations"


def _create_pre_migration_database(url: str) -> None:
    """The tables exactly as `metadata.create_all` made them at commit 5704dff, with jobs in every state."""
    engine = make_engine(url)
    ddl = (BEFORE / f"{engine.dialect.name}.sql").read_text()
    body = "\n".join(line for line in ddl.splitlines() if not line.startswith("--"))
    statements = [statement for statement in body.split(";") if statement.strip()]
    params = json.dumps({"prompt": "old", "seed": 7, "resolution": "128x128"})
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO job_inputs (sha256, data, created_at) VALUES ('s', :d, 1.0)"), {"d": b"img"})
        rows = [(QUEUED, None, None), (QUEUED, None, None), (PROCESSING, "w-old", None),
                (SUCCEEDED, "w-old", "results/x.mp4")]
        for i, (status, worker, path) in enumerate(rows):
            conn.execute(text(
                "INSERT INTO jobs (id, owner, model, media_type, status, params, input_sha256, enqueued_at, progress, "
                "attempts, worker_id, result_path, lease_expires_at) VALUES (:id, 'alice', 'm', 'video', :status, "
                ":params, 's', :t, 0.0, :attempts, :worker, :path, :lease)"),
                {"id": f"job-{i}", "status": status, "params": params, "t": 10.0 + i, "worker": worker, "path": path,
                 "attempts": 0 if status == QUEUED else 1, "lease": 1e12 if status == PROCESSING else None})
        conn.execute(text("INSERT INTO job_events (owner, job_id, name, payload, created_at) VALUES "
                          "('alice', 'job-3', 'media_generation_completed', '{\"status\": \"succeeded\"}', 13.0)"))
    engine.dispose()


def test_a_pre_migration_database_is_upgraded_losing_no_job(store_url):
    _create_pre_migration_database(store_url)
    store = JobStore(store_url)  # what every node does at start: migrate under the lock
    try:
        assert current_revision(store.engine) == head_revision() != "0001_baseline"
        jobs = store.list(statuses=None)
        assert [(j.id, j.status) for j in jobs] == [("job-0", QUEUED), ("job-1", QUEUED), ("job-2", PROCESSING),
                                                    ("job-3", SUCCEEDED)]
        assert jobs[0].params == {"prompt": "old", "seed": 7, "resolution": "128x128"}
        assert jobs[3].result_path == "results/x.mp4" and jobs[3].step_seconds is None
        assert store.input_image("s") == b"img"
        assert [e.job_id for e in store.events_after(0)] == ["job-3"]
        # The upgraded store works: the old queued jobs are claimed in their order, with the new columns.
        claimed = store.claim_next("w-new", 30)
        assert claimed is not None and claimed.id == "job-0"
        assert store.complete("job-0", "w-new", "results/y.mp4", {"seed": 7}, step_seconds=0.5, size_bucket="S")
        assert store.get("job-0").step_seconds == 0.5
        assert store.recover_abandoned(worker_id="w-old") == ["job-2"]
        assert store.get("job-2").status == QUEUED
    finally:
        store.close()


def test_nodes_starting_together_migrate_once(store_url):
    results: list[object] = []

    def start_node() -> None:
        engine = make_engine(store_url)
        try:
            results.append(migrate(engine))
        except Exception as exc:  # noqa: BLE001 (reported below)
            results.append(exc)
        finally:
            engine.dispose()

    nodes = [threading.Thread(target=start_node) for _ in range(4)]
    for node in nodes:
        node.start()
    for node in nodes:
        node.join()
    assert results == [head_revision()] * 4
    engine = make_engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


def test_migrations_at_head_produce_exactly_the_tables_the_code_uses(store_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from server.queue.tables import metadata

    engine = make_engine(store_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), metadata)
        assert differences == []  # tables.py changed without a revision (or the reverse)
    finally:
        engine.dispose()
