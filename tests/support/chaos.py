"""Random kill -9 of a live server's processes while jobs are queued, in flight, being written and
streamed to SSE clients; then a check of every promise. Shared by tests/e2e/test_chaos.py (20
cycles) and bench/reliability.py (100 and more).

Each cycle enqueues a few small jobs (some slowed so that a kill finds one in flight), waits a
random moment and SIGKILLs one of: a worker (the supervisor restarts it), the `serve` process alone
(its workers get SIGTERM from the kernel and hand their jobs back), or the whole process group
at once (the lease and the janitor recover the jobs). A killed `serve` is started again on the same
data dir. SSE subscribers of every key listen throughout and reconnect when the stream breaks.

At the end: every accepted id is terminal with a truthful message, each succeeded job's MP4 (as
served by its result URL) decodes with the requested frame count, no temporary file remains, no
job has two completion events, and every subscriber saw every completion of its own key (the
grace window replays what it missed while the API was down) and nothing of another key.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import av
import httpx

from server.core.debris import leftover_job_id
from serverkit import KEY_A, KEY_B, LiveServer, tiny_body

KEYS = {"alice": KEY_A, "bob": KEY_B}
TERMINAL = ("succeeded", "failed", "cancelled")
# Messages a failed job may truthfully carry after these faults.
TRUTHFUL_FAILURES = ("died", "is gone", "stopped sending heartbeats", "retried once")
FRAMES = 9


@dataclass
class ChaosReport:
    cycles: int = 0
    kills: Counter = field(default_factory=Counter)  # target -> count
    stages_at_kill: Counter = field(default_factory=Counter)  # stage of an in-flight job when killed
    accepted: list[tuple[str, str]] = field(default_factory=list)  # (owner, id)
    statuses: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # accepted ids not terminal at the end
    backlog: int = 0  # accepted jobs not yet ended after the last kill
    drain_seconds: float = 0.0
    untruthful: list[str] = field(default_factory=list)
    broken_files: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    double_completions: list[str] = field(default_factory=list)
    missed_events: list[str] = field(default_factory=list)
    foreign_events: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.untruthful or self.broken_files or self.leftovers or self.double_completions
                    or self.missed_events or self.foreign_events)


class Subscriber(threading.Thread):
    """An SSE client of one key that reconnects whenever its stream breaks (the API was killed)."""

    def __init__(self, server: LiveServer, owner: str):
        super().__init__(daemon=True, name=f"sse-{owner}")
        self.server, self.owner = server, owner
        self.completions: dict[str, str] = {}  # generation id -> status
        self.stop = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {KEYS[self.owner]}"}
        while not self.stop.is_set():
            try:
                with httpx.stream("GET", self.server.api + "/events", headers=headers,
                                  timeout=httpx.Timeout(5, read=5)) as stream:
                    event = None
                    for line in stream.iter_lines():
                        if self.stop.is_set():
                            return
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("data: ") and event == "media_generation_completed":
                            payload = json.loads(line[6:])
                            self.completions[payload["generation_id"]] = payload["status"]
            except (httpx.HTTPError, OSError):
                pass
            self.stop.wait(0.3)


def _decodes(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def _restart(server: LiveServer, family: list[tuple[int, str]]) -> None:
    server.kill(family, signal.SIGKILL)  # whatever is left of the old server (workers, ffmpeg)
    server.process.wait()
    server.start(wait_ready=False)
    server.wait_ready(path="/healthz", timeout=120)


def _kill(server: LiveServer, rng: random.Random, report: ChaosReport) -> None:
    with contextlib.suppress(Exception):
        for (stage,) in server.db("SELECT stage FROM jobs WHERE status = 'processing'"):
            report.stages_at_kill[stage or "?"] += 1
    target = rng.choices(["worker", "serve", "group"], weights=[2, 1, 1])[0]
    if target == "worker":
        pids = [pid for (pid,) in server.db("SELECT pid FROM workers")]
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            target = "serve"
        else:
            os.kill(rng.choice(alive), signal.SIGKILL)
    if target in ("serve", "group"):
        family = server.family()
        if target == "serve":
            server.process.send_signal(signal.SIGKILL)  # workers get SIGTERM (PR_SET_PDEATHSIG)
        else:
            server.kill(family, signal.SIGKILL)  # the API, its supervisor and the workers at once
        _restart(server, family)
    report.kills[target] += 1


def _wait_for_a_worker(server: LiveServer, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.base + "/readyz", timeout=5).status_code == 200:
                return
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def run_chaos(data_dir: Path, cycles: int, seed: int = 0, workers: int = 1, drain_timeout: float = 3600,
              stall_seconds: float = 180, log=print) -> ChaosReport:
    """Run `cycles` random kills against a fresh server in `data_dir`; returns what was checked.

    After the last kill the jobs still queued drain for at most `drain_timeout` s; a job counts as
    lost if it has not ended when no job has ended for `stall_seconds`."""
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    report = ChaosReport()
    started = time.monotonic()
    server = LiveServer(data_dir, ["--api-keys", ",".join(f"{o}:{k}" for o, k in KEYS.items()), "--workers",
                                   str(workers), "--lease-seconds", "3", "--events-grace-seconds", "3600",
                                   "--rate-limit", "0", "--max-active-jobs", "0"])
    server.start(wait_ready=False)
    server.wait_ready(path="/healthz", timeout=120)
    subscribers = [Subscriber(server, owner) for owner in KEYS for _ in range(2)]
    for subscriber in subscribers:
        subscriber.start()
    try:
        for cycle in range(cycles):
            for _ in range(rng.randint(1, 3)):
                owner = rng.choice(list(KEYS))
                # plain, slow steps, or a slow write (the .partial file exists while it sleeps)
                pace = rng.choice(["", " [[test-step-delay=0.2]]", " [[test-decode-delay=2]]"])
                body = tiny_body(prompt=f"chaos {cycle}{pace}",
                                 generate_audio=rng.random() < 0.5, num_frames=FRAMES)
                try:
                    response = httpx.post(server.api + "/ai/queue", json=body, timeout=30,
                                          headers={"Authorization": f"Bearer {KEYS[owner]}"})
                except httpx.HTTPError:
                    continue  # not accepted: the client saw no answer
                if response.status_code == 200:
                    report.accepted += [(owner, g["generation_id"]) for g in response.json()["generations"]]
            _wait_for_a_worker(server)  # so that most kills find a job in flight, not a loading model
            time.sleep(rng.uniform(0.3, 3.0))
            _kill(server, rng, report)
            report.cycles += 1
            log(f"cycle {cycle + 1}/{cycles}: kills {dict(report.kills)}, accepted {len(report.accepted)}")
        _check(server, subscribers, report, drain_timeout, stall_seconds)
    finally:
        for subscriber in subscribers:
            subscriber.stop.set()
        server.cleanup()
    report.seconds = time.monotonic() - started
    return report


def _drain(rows, accepted: list[str], timeout: float, stall_seconds: float) -> None:
    """Wait for the accepted jobs to end: until all have, until none has ended for `stall_seconds` (a lost
    or stuck job never ends; a backlog on a slow machine keeps ending), or until `timeout`."""
    deadline, last_done, last_change = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        current = rows()
        done = sum(current.get(i, (0, 0, ""))[2] in TERMINAL for i in accepted)
        if done == len(accepted):
            return
        if done != last_done:
            last_done, last_change = done, time.monotonic()
        elif time.monotonic() - last_change > stall_seconds:
            return
        time.sleep(1)


def _check(server: LiveServer, subscribers: list[Subscriber], report: ChaosReport, drain_timeout: float,
           stall_seconds: float) -> None:
    def rows() -> dict[str, tuple]:
        found = server.db("SELECT id, owner, status, error_message, result_path FROM jobs")
        return {row[0]: row for row in found}

    accepted = [job_id for _owner, job_id in report.accepted]
    report.backlog = sum(rows().get(i, (0, 0, ""))[2] not in TERMINAL for i in accepted)
    started = time.monotonic()
    _drain(rows, accepted, drain_timeout, stall_seconds)
    report.drain_seconds = time.monotonic() - started
    final = rows()
    time.sleep(2)  # a janitor pass (every lease/4 s) sweeps what the last kill left
    for owner, job_id in report.accepted:
        row = final.get(job_id)
        if row is None or row[2] not in TERMINAL:  # with its state, so a failed run can be told apart:
            report.lost.append(f"{job_id}: {row[2] if row else 'no row'}")  # gone, or queued/processing too long
            continue
        report.statuses[row[2]] += 1
        if row[2] == "failed" and not any(text in (row[3] or "") for text in TRUTHFUL_FAILURES):
            report.untruthful.append(f"{job_id}: {row[3]}")
        if row[2] == "succeeded":
            served = httpx.get(f"{server.api}/ai/queue/{job_id}", timeout=10,
                               headers={"Authorization": f"Bearer {KEYS[owner]}"}).json()["result_url"]
            try:
                frames = _decodes(httpx.get(served, timeout=30).content)
            except Exception as exc:  # noqa: BLE001 (any decode failure is a broken file)
                report.broken_files.append(f"{job_id}: {exc}")
                continue
            if frames != FRAMES:
                report.broken_files.append(f"{job_id}: {frames} frames, not {FRAMES}")
    report.leftovers = [p.name for p in server.data_dir.glob("results/*/.*") if leftover_job_id(p.name)]
    completions = server.db("SELECT job_id, COUNT(*) FROM job_events WHERE name = 'media_generation_completed' "
                            "GROUP BY job_id HAVING COUNT(*) > 1")
    report.double_completions = [f"{job_id}: {count} completions" for job_id, count in completions]
    owed: dict[str, set[str]] = defaultdict(set)
    for job_id, row in final.items():
        if row[2] in ("succeeded", "failed"):
            owed[row[1]].add(job_id)
    deadline = time.monotonic() + 15  # reconnecting subscribers catch up through the grace window
    while time.monotonic() < deadline and any(not owed[s.owner] <= set(s.completions) for s in subscribers):
        time.sleep(0.5)
    for subscriber in subscribers:
        missing = owed[subscriber.owner] - set(subscriber.completions)
        report.missed_events += [f"{subscriber.name}: {job_id}" for job_id in sorted(missing)]
        others = set().union(*(owed[o] for o in KEYS if o != subscriber.owner))
        report.foreign_events += [f"{subscriber.name}: {job_id}" for job_id in set(subscriber.completions) & others]
