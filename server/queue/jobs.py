"""The durable job queue: one short transaction per state change, every worker write conditional.

Every write a worker makes is conditional on it still owning the job (`status = 'processing' AND
worker_id = me`), so a cancel, a lease expiry or a second worker can never be overwritten by a
late writer. Claiming is an optimistic compare-and-set (`UPDATE ... WHERE id = ? AND status =
'queued'`), which is correct on both backends without dialect-specific locking. Start images are
stored once beside the jobs that use them (`job_inputs`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import OperationalError

from server.queue.limits import SubmitLimits, peek, take
from server.queue.notify import CHANNEL_CANCEL, CHANNEL_JOBS, notify
from server.queue.quick_read import Locked, QuickRowReader
from server.queue.records import Job, NewJob
from server.queue.tables import (
    ACTIVE,
    CANCELLED,
    EVENT_CANCELLED,
    EVENT_COMPLETED,
    EVENT_PROGRESS,
    EVENT_STARTED,
    FAILED,
    KEYFRAME_IMAGES,
    MAX_ATTEMPTS,
    PROCESSING,
    QUEUED,
    STATUSES,
    SUCCEEDED,
    inputs,
    jobs,
)

MAX_OFFSET = 2**62
# The status read is the API's hottest query: built once with bound parameters, it skips SQLAlchemy's
# per-call statement construction and cache-key walk (273 -> 111 us per read on the build machine).
GET_JOB = select(jobs).where(jobs.c.id == bindparam("job_id"))
_GET_OWNED = GET_JOB.where(jobs.c.owner == bindparam("owner"))
QUICK_BUSY_SECONDS = 0.005  # how long `get_nowait` may wait on a SQLite lock before it gives up


class WouldWait(Exception):
    """`get_nowait` cannot answer without waiting: the store is not a local file, or it is locked."""


def job_from_columns(columns: dict[str, Any]) -> Job:
    """A `Job` from a row's columns by name (the quick reader's rows)."""
    return Job(**columns)


def _job(row: Any) -> Job:
    return job_from_columns(dict(row._mapping))


class JobQueue:
    """Jobs and their start images (mixed into `JobStore`, which owns `engine` and `_event`)."""

    engine: Engine
    quick_engine: Engine | None
    quick_reads: QuickRowReader | None
    schema: str
    _event: Any

    # ---- clients ----------------------------------------------------------------------------

    def enqueue(self, new_jobs: Iterable[NewJob], image: bytes, now: float | None = None,
                keyframe_images: dict[str, bytes] | None = None, limits: SubmitLimits | None = None) -> list[Job]:
        """Store the start image (and any keyframe images, by sha256) and the jobs in one transaction.

        With `limits`, the owner's rate and active-job cap are checked first, in the same
        transaction (`LimitExceeded`: nothing is stored and nothing spent).
        """
        now = time.time() if now is None else now
        new_jobs = list(new_jobs)
        images = {**(keyframe_images or {}), **{job.input_sha256: image for job in new_jobs}}
        with self.engine.begin() as conn:
            if limits is not None and new_jobs:
                take(conn, new_jobs[0].owner, len(new_jobs), limits, now)
            for sha, data in images.items():
                # Touch an existing image so `prune_inputs` (which spares recent rows) keeps it.
                touched = conn.execute(update(inputs).where(inputs.c.sha256 == sha).values(created_at=now)).rowcount
                if not touched:
                    conn.execute(insert(inputs).values(sha256=sha, data=data, created_at=now))
            for job in new_jobs:
                conn.execute(
                    insert(jobs).values(
                        id=job.id, owner=job.owner, model=job.model, media_type="video", status=QUEUED,
                        params=job.params, input_sha256=job.input_sha256, enqueued_at=now, progress=0.0,
                        attempts=0,
                    )
                )
            notify(conn, CHANNEL_JOBS, "", self.schema)
        return [self.get(job.id) for job in new_jobs]  # type: ignore[misc]

    def check_limits(self, owner: str, cost: int, limits: SubmitLimits, now: float | None = None) -> None:
        """Raise `LimitExceeded` if `enqueue` would refuse `cost` jobs of `owner` now (reads only)."""
        with self.engine.connect() as conn:
            refused = peek(conn, owner, cost, limits, time.time() if now is None else now)
        if refused is not None:
            raise refused

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        """One job, or None (also None when `owner` is given and differs)."""
        return self._read_job(self.engine, job_id, owner)

    def get_nowait(self, job_id: str, owner: str | None = None) -> Job | None:
        """`get` for a caller that must not block (an event loop), or `WouldWait`.

        Only a SQLite file answers: a read there is a local page lookup, and in WAL mode readers do
        not wait for writers; a lock that would make it wait more than `QUICK_BUSY_SECONDS` (a
        checkpoint, a store held EXCLUSIVE) raises `WouldWait`, as does a network store, whose
        round trip belongs in a thread.
        """
        if self.quick_reads is None:
            raise WouldWait
        try:
            job = self.quick_reads.one({"job_id": job_id})
        except Locked as exc:  # "database is locked" and other trouble: the patient path decides
            raise WouldWait from exc
        return job if job is not None and owner in (None, job.owner) else None

    @staticmethod
    def _read_job(engine: Engine, job_id: str, owner: str | None) -> Job | None:
        params = {"job_id": job_id} if owner is None else {"job_id": job_id, "owner": owner}
        with engine.connect() as conn:
            row = conn.execute(GET_JOB if owner is None else _GET_OWNED, params).first()
        return _job(row) if row else None

    def list(
        self,
        owner: str | None = None,
        statuses: Iterable[str] | None = ACTIVE,
        model: str | None = None,
        media_type: str | None = None,
        limit: int = 1000,
    ) -> list[Job]:
        """Jobs in FIFO order, filtered; `statuses=None` means all."""
        query = self._filtered(select(jobs), owner, statuses, model, media_type).order_by(jobs.c.seq).limit(limit)
        with self.engine.connect() as conn:
            return [_job(row) for row in conn.execute(query)]

    @staticmethod
    def _filtered(query: Any, owner: str | None, statuses: Iterable[str] | None, model: str | None,
                  media_type: str | None) -> Any:
        if owner is not None:
            query = query.where(jobs.c.owner == owner)
        if statuses is not None:
            query = query.where(jobs.c.status.in_(list(statuses)))
        if model is not None:
            query = query.where(jobs.c.model == model)
        if media_type is not None:
            query = query.where(jobs.c.media_type == media_type)
        return query

    def page(
        self,
        owner: str | None = None,
        statuses: Iterable[str] | None = None,
        model: str | None = None,
        media_type: str | None = None,
        offset: int = 0,
        limit: int = 50,
        newest_first: bool = False,
    ) -> tuple[list[Job], int]:
        """One page of the filtered jobs (FIFO, or newest first) and how many match in all."""
        return self._page(self.engine, owner, statuses, model, media_type, offset, limit, newest_first)

    def page_nowait(self, owner: str | None = None, statuses: Iterable[str] | None = None, model: str | None = None,
                    media_type: str | None = None, offset: int = 0, limit: int = 50,
                    newest_first: bool = False) -> tuple[list[Job], int]:
        """`page` for a caller that must not block (an event loop), or `WouldWait`: as `get_nowait`,
        only a SQLite file answers, and a lock held past `QUICK_BUSY_SECONDS` gives up."""
        if self.quick_engine is None:
            raise WouldWait
        try:
            return self._page(self.quick_engine, owner, statuses, model, media_type, offset, limit, newest_first)
        except OperationalError as exc:  # "database is locked": the patient path decides
            raise WouldWait from exc

    def _page(self, engine: Engine, owner: str | None, statuses: Iterable[str] | None, model: str | None,
              media_type: str | None, offset: int, limit: int, newest_first: bool) -> tuple[list[Job], int]:
        statuses = None if statuses is None else list(statuses)
        # Past any real row, and within the 64-bit integers SQL takes (a huge offset is an empty page).
        offset = min(offset, MAX_OFFSET)
        order = jobs.c.seq.desc() if newest_first else jobs.c.seq
        query = self._filtered(select(jobs), owner, statuses, model, media_type).order_by(order)
        counted = self._filtered(select(func.count()).select_from(jobs), owner, statuses, model, media_type)
        with engine.connect() as conn:
            rows = conn.execute(query.offset(offset).limit(limit)).all()
            # A short page that starts within the rows is the end: the count is known without a second query.
            if len(rows) < limit and (rows or offset == 0):
                total = offset + len(rows)
            else:
                total = int(conn.execute(counted).scalar_one())
        return [_job(row) for row in rows], total

    def after(self, owner: str | None, after_id: str | None, limit: int,
              newest_first: bool = True) -> tuple[list[Job], bool] | None:
        """Up to `limit` jobs following the job `after_id` (cursor paging) and whether more follow.

        None when `after_id` names no job of `owner`. Any status is listed.
        """
        order = jobs.c.seq.desc() if newest_first else jobs.c.seq
        query = self._filtered(select(jobs), owner, None, None, None).order_by(order).limit(limit + 1)
        with self.engine.connect() as conn:
            if after_id is not None:
                mark = conn.execute(self._filtered(select(jobs.c.seq).where(jobs.c.id == after_id),
                                                   owner, None, None, None)).scalar()
                if mark is None:
                    return None
                query = query.where(jobs.c.seq < mark if newest_first else jobs.c.seq > mark)
            rows = conn.execute(query).all()
        return [_job(row) for row in rows[:limit]], len(rows) > limit

    def cancel(self, job_id: str, owner: str | None = None, now: float | None = None) -> Job | None:
        """Cancel a queued or processing job at once; an ended job keeps its state. None if unknown.

        A processing job's worker notices within one denoising step (`is_still_mine`).
        """
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            query = select(jobs).where(jobs.c.id == job_id)
            if owner is not None:
                query = query.where(jobs.c.owner == owner)
            row = conn.execute(query).first()
            if row is None:
                return None
            result = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE))
                .values(status=CANCELLED, completed_at=now, lease_expires_at=None,
                        error_message="Cancelled by the client.")
            )
            if result.rowcount:
                self._event(conn, row.owner, job_id, EVENT_CANCELLED,
                            {"status": CANCELLED}, now)
                if row.status == PROCESSING:  # its worker stops within one step
                    notify(conn, CHANNEL_CANCEL, job_id, self.schema)
        return self.get(job_id)

    def counts(self) -> dict[str, int]:
        """Number of jobs per status (for metrics)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)).all()
        return {status: 0 for status in STATUSES} | {status: count for status, count in rows}


    # ---- workers ----------------------------------------------------------------------------

    @staticmethod
    def _next_candidate(conn: Any) -> Any:
        """Fair FIFO: FIFO within an API key, round-robin between keys.

        Among the keys with queued jobs, the one served least recently (oldest latest start,
        never-served first) goes next with its oldest job; ties go to the earliest enqueued. With
        one key this is plain FIFO; a key that queued 100 jobs cannot make another key wait for all.
        """
        heads = conn.execute(
            select(jobs.c.owner, func.min(jobs.c.seq).label("first"))
            .where(jobs.c.status == QUEUED)
            .group_by(jobs.c.owner)
        ).all()
        if not heads:
            return None
        head = heads[0]
        if len(heads) > 1:
            served = dict(conn.execute(
                select(jobs.c.owner, func.max(jobs.c.started_at))
                .where(jobs.c.owner.in_([h.owner for h in heads]), jobs.c.started_at.is_not(None))
                .group_by(jobs.c.owner)
            ).all())
            head = min(heads, key=lambda h: (served.get(h.owner, float("-inf")), h.first))
        return head  # (owner, first): the claim updates the row by `seq`

    def claim_next(self, worker_id: str, lease_seconds: float, now: float | None = None) -> Job | None:
        """Take the next queued job (fair FIFO, see `_next_candidate`) for `worker_id` with a lease.

        None when the queue is empty.
        """
        for _ in range(20):  # lost races against other workers: try the next candidate
            now = time.time() if now is None else now
            with self.engine.begin() as conn:
                candidate = self._next_candidate(conn)
                if candidate is None:
                    return None
                # RETURNING (PostgreSQL; SQLite >= 3.35) saves a read-back round trip per claim.
                claimed = conn.execute(
                    update(jobs)
                    .where(jobs.c.seq == candidate.first, jobs.c.status == QUEUED)
                    .values(status=PROCESSING, worker_id=worker_id, started_at=now,
                            lease_expires_at=now + lease_seconds, attempts=jobs.c.attempts + 1,
                            progress=0.0, stage="prepare", error_message=None)
                    .returning(*jobs.c)
                ).first()
                if claimed is not None:
                    self._event(conn, candidate.owner, claimed.id, EVENT_STARTED,
                                {"status": PROCESSING},
                                now)
            if claimed is not None:
                return _job(claimed)
            now = None
        return None

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        lease_seconds: float,
        progress: float | None = None,
        stage: str | None = None,
        emit_progress: bool = False,
        now: float | None = None,
        step: tuple[int, int] | None = None,
    ) -> bool:
        """Extend the lease (and record progress); False when the job is no longer this worker's.

        `step` (step, total) within the stage goes into the progress event only (not a column)."""
        now = time.time() if now is None else now
        values: dict[str, Any] = {"lease_expires_at": now + lease_seconds}
        if progress is not None:
            values["progress"] = progress
        if stage is not None:
            values["stage"] = stage
        with self.engine.begin() as conn:
            owned = conn.execute(
                update(jobs).where(*self._mine(job_id, worker_id)).values(**values)
            ).rowcount
            if owned and emit_progress and progress is not None:
                owner = conn.execute(select(jobs.c.owner).where(jobs.c.id == job_id)).scalar_one()
                detail = {"step": step[0], "total": step[1]} if step else {}
                self._event(conn, owner, job_id, EVENT_PROGRESS,
                            {"status": PROCESSING, "progress": progress, "stage": stage, **detail}, now)
        return bool(owned)

    def is_still_mine(self, job_id: str, worker_id: str) -> bool:
        """A cheap read: is the job still processing on this worker (not cancelled, not reassigned)?"""
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs.c.id).where(*self._mine(job_id, worker_id))).first()
        return row is not None

    def complete(
        self, job_id: str, worker_id: str, result_path: str, info: dict[str, Any], now: float | None = None,
        step_seconds: float | None = None, size_bucket: str | None = None,
    ) -> bool:
        """Mark succeeded with its result (a key of the results backend); False when no longer this worker's.

        `step_seconds` (mean denoising step time) and `size_bucket` feed the fleet's metrics.
        """
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            done = conn.execute(
                update(jobs).where(*self._mine(job_id, worker_id)).values(
                    status=SUCCEEDED, completed_at=now, progress=1.0, stage="done", result_path=result_path,
                    info=info, lease_expires_at=None, step_seconds=step_seconds, size_bucket=size_bucket,
                ).returning(jobs.c.owner, jobs.c.model)
            ).first()
            if done is not None:
                self._event(conn, done.owner, job_id, EVENT_COMPLETED,
                            {"status": SUCCEEDED, "model": done.model}, now)
        return done is not None

    def fail(self, job_id: str, worker_id: str | None, message: str, now: float | None = None) -> bool:
        """Mark failed with a message; with a worker id only if it still owns the job."""
        now = time.time() if now is None else now
        conditions = self._mine(job_id, worker_id) if worker_id else (jobs.c.id == job_id,
                                                                      jobs.c.status.in_(ACTIVE))
        with self.engine.begin() as conn:
            return bool(self._fail(conn, conditions, job_id, message, now))

    def requeue(self, job_id: str, worker_id: str, now: float | None = None) -> bool:
        """Give a job back to the queue without counting the attempt (a worker shutting down)."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(jobs).where(*self._mine(job_id, worker_id)).values(
                    status=QUEUED, worker_id=None, lease_expires_at=None, started_at=None, progress=0.0,
                    stage=None, attempts=jobs.c.attempts - 1,
                )
            ).rowcount
            if changed:
                notify(conn, CHANNEL_JOBS, "", self.schema)
            return bool(changed)

    def recover_abandoned(
        self, now: float | None = None, worker_id: str | None = None, reason: str | None = None
    ) -> list[str]:
        """Retry (once) or fail jobs whose worker is gone: lease expired, or `worker_id` known dead.

        Returns the ids that were touched.
        """
        now = time.time() if now is None else now
        query = select(jobs.c.id, jobs.c.owner, jobs.c.attempts, jobs.c.worker_id).where(jobs.c.status == PROCESSING)
        if worker_id is not None:
            query = query.where(jobs.c.worker_id == worker_id)
        else:
            query = query.where(jobs.c.lease_expires_at < now)
        why = reason or "its worker stopped sending heartbeats (crashed or lost)"
        touched = []
        with self.engine.begin() as conn:
            for row in conn.execute(query).all():
                owned = (jobs.c.id == row.id, jobs.c.status == PROCESSING, jobs.c.worker_id == row.worker_id)
                if row.attempts >= MAX_ATTEMPTS:
                    message = (f"The job failed: {why} while processing it, on attempt {row.attempts} of "
                               f"{MAX_ATTEMPTS}; it was retried once and is not retried again.")
                    changed = self._fail(conn, owned, row.id, message, now)
                else:
                    changed = conn.execute(
                        update(jobs).where(*owned).values(
                            status=QUEUED, worker_id=None, lease_expires_at=None, started_at=None,
                            progress=0.0, stage=None, error_message=f"Retrying: {why} on attempt {row.attempts}.",
                        )
                    ).rowcount
                if changed:
                    touched.append(row.id)
                    # The old worker (if alive after all) stops; a retried job wakes the others.
                    notify(conn, CHANNEL_CANCEL, row.id, self.schema)
                    notify(conn, CHANNEL_JOBS, "", self.schema)
        return touched

    def running_ids(self, job_ids: Iterable[str]) -> set[str]:
        """Which of `job_ids` are processing now (their temporary files are in use)."""
        wanted = list(job_ids)
        if not wanted:
            return set()
        with self.engine.connect() as conn:
            rows = conn.execute(select(jobs.c.id).where(jobs.c.id.in_(wanted), jobs.c.status == PROCESSING)).all()
        return {row.id for row in rows}

    # ---- start images and retention -----------------------------------------------------------

    def input_image(self, sha256: str) -> bytes:
        """The stored start image bytes of a job."""
        with self.engine.connect() as conn:
            row = conn.execute(select(inputs.c.data).where(inputs.c.sha256 == sha256)).first()
        if row is None:
            raise KeyError(sha256)
        return bytes(row.data)

    def prune_inputs(self, older_than: float) -> int:
        """Delete stored images that no active job needs and were not used since `older_than`."""
        with self.engine.begin() as conn:
            needed = select(jobs.c.input_sha256).where(jobs.c.status.in_(ACTIVE))
            # Keyframe images are named in the params (JSON): gathered here, portable across backends.
            keyframes = {sha for (params,) in conn.execute(select(jobs.c.params).where(jobs.c.status.in_(ACTIVE)))
                         for sha in (params or {}).get(KEYFRAME_IMAGES, [])}
            return conn.execute(
                delete(inputs).where(inputs.c.sha256.not_in(needed), inputs.c.sha256.not_in(keyframes),
                                     inputs.c.created_at < older_than)
            ).rowcount


    def expired_results(self, older_than: float) -> list[Job]:
        """Succeeded jobs completed before `older_than` whose result file is still recorded."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs).where(jobs.c.status == SUCCEEDED, jobs.c.completed_at < older_than,
                                   jobs.c.result_deleted_at.is_(None), jobs.c.result_path.is_not(None))
            ).all()
        return [_job(row) for row in rows]

    def mark_result_deleted(self, job_id: str, message: str, now: float | None = None) -> None:
        """Record that a result file was deleted by the retention policy (the record stays)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(result_deleted_at=now,
                                                                         error_message=message))

    # ---- internals -------------------------------------------------------------------------

    @staticmethod
    def _mine(job_id: str, worker_id: str | None) -> tuple:
        return (jobs.c.id == job_id, jobs.c.status == PROCESSING, jobs.c.worker_id == worker_id)

    def _fail(self, conn: Any, conditions: tuple, job_id: str, message: str, now: float) -> int:
        changed = conn.execute(
            update(jobs).where(*conditions).values(status=FAILED, completed_at=now, error_message=message,
                                                   lease_expires_at=None)
        ).rowcount
        if changed:
            owner = conn.execute(select(jobs.c.owner).where(jobs.c.id == job_id)).scalar_one()
            self._event(conn, owner, job_id, EVENT_COMPLETED,
                        {"status": FAILED, "error": message}, now)
            notify(conn, CHANNEL_CANCEL, job_id, self.schema)  # failed by someone else: its worker stops
        return changed
