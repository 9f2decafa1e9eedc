"""Load on a live server from several processes on loopback: concurrent enqueues, status polls, list
calls and SSE subscribers across several keys, while the worker is busy.

Starts `ltx-server serve --weights tiny` (one worker, three API keys) on a free loopback port with
a fresh data dir. Once the subscribers are connected, a long job starts (it keeps the worker
computing through the measured time; it is cancelled at the end). Then, at once and for a fixed
time: SSE subscribers (spread over the keys) listen; one enqueuer process per key submits small
jobs; poller processes read `GET /api/ai/queue/{id}` of their key's jobs at a fixed total rate;
a lister calls `GET /api/ai/queue?status=all` at a fixed rate. Polls and lists are an open loop
(each call has a scheduled time and its latency counts from it, as wrk2 measures), so the p99 is
the latency at that rate, not the queueing of a closed loop that runs as fast as it can. Reports
requests per second, p50/p99 of status reads, SSE delivery latency (the store's completed_at to
the subscriber's read), the CPU the worker and the API used, and whether every subscriber got
every completion of its own key and none of another key's. Bounded in time and count; all
traffic on 127.0.0.1.

    python bench/load.py [--seconds 20] [--rate 550] [--list-rate 20] [--subscribers 54] [--jobs 6] [--markdown]
    python bench/load.py --serve-args '--api-cpus 0' --client-cpus 1   # the API on a core of its own
    python bench/load.py --list-rate 0   # no list calls: what they add to the status reads' tail
    python bench/load.py --runs 10 --markdown   # ten fresh servers: a row each, the median and the worst
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support")]

import httpx  # noqa: E402
from table import print_table  # noqa: E402

from server.core.cpus import parse_cpu_list  # noqa: E402
from serverkit import LiveServer, tiny_body  # noqa: E402

KEYS = {f"user{i}": f"bench-key-{i}-0123456789" for i in range(3)}


def headers(owner: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[owner]}"}


def subscriber_process(proc: int, base: str, owners: list[str], until: float, ready, stop, out) -> None:
    """SSE clients (threads), one per entry of `owners`: every completion received, with its arrival time."""
    results: list[tuple[str, int, str, float]] = []
    lock = threading.Lock()
    connected = threading.Semaphore(0)

    def listen(index: int, owner: str) -> None:
        seen = []
        try:
            with httpx.stream("GET", base + "/api/events", headers=headers(owner),
                              timeout=httpx.Timeout(10, read=until - time.time() + 10)) as stream:
                event = None
                for line in stream.iter_lines():
                    if line == ": connected":
                        connected.release()
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "media_generation_completed":
                        seen.append(((proc, index, owner), json.loads(line[6:])["generation_id"], time.time()))
                    if stop.is_set() or time.time() > until:
                        break
        except httpx.HTTPError:
            pass
        with lock:
            results.extend(seen)

    threads = [threading.Thread(target=listen, args=(i, o), daemon=True) for i, o in enumerate(owners)]
    for thread in threads:
        thread.start()
    for _ in threads:
        connected.acquire(timeout=60)
    ready.set()
    for thread in threads:
        thread.join(timeout=until - time.time() + 30)
    out.put(("sse", results))


def enqueuer_process(base: str, owner: str, jobs: int, until: float, out) -> None:
    """`jobs` small jobs of one key, spread over the run (so the worker has work until its end)."""
    ids, latencies = [], []
    spacing = (until - time.time()) / jobs
    with httpx.Client(headers=headers(owner), timeout=30) as client:
        for index in range(jobs):
            if time.time() > until:
                break
            clock = time.perf_counter()
            response = client.post(base + "/api/ai/queue", json=tiny_body(prompt=f"{owner} {index}"))
            latencies.append(time.perf_counter() - clock)
            ids += [g["generation_id"] for g in response.json()["generations"]]
            time.sleep(random.uniform(0.5, 1.0) * spacing)
    out.put(("enqueue", owner, ids, latencies))


def paced(rate: float, seconds: float, warmup: float, send, record) -> float:
    """Call `send()` at `rate` per second for `warmup + seconds`, open loop (as wrk2 does): each call has
    a scheduled time, and `record(latency, lag)` gets the time from that schedule to the answer, so a slow
    answer also counts against the calls it delayed (no coordinated omission), and the generator's own
    lag: how late it sent a call whose connection was free (its timer or a busy core, not the server).
    Calls scheduled in the first `warmup` seconds (every load process starting at once) are made but
    not recorded. Returns how long the recorded calls took in fact (longer than `seconds` when the
    server fell behind)."""
    interval, start = 1.0 / rate, time.perf_counter() + random.uniform(0, 1.0 / rate)
    free_since = start
    for index in range(int(rate * (warmup + seconds))):
        due = start + index * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        sent = time.perf_counter()
        send()
        done = time.perf_counter()
        if due - start >= warmup:
            record(done - due, sent - max(due, free_since))
        free_since = done
    return time.perf_counter() - (start + warmup)


def raw_client(base: str) -> http.client.HTTPConnection:
    """A keep-alive connection of the standard library: the load generator shares the server's cores,
    and http.client costs a fraction of httpx's CPU per request."""
    host, port = base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def get(connection: http.client.HTTPConnection, path: str, owner: str) -> None:
    connection.request("GET", path, headers=headers(owner))
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status}")


def poller_process(base: str, targets: list[tuple[str, str]], seconds: float, warmup: float, rate: float,
                   threads: int, out) -> None:
    """`threads` connections reading `GET /api/ai/queue/{id}` of random jobs, together `rate` per second."""
    latencies: list[tuple[float, float]] = []
    spans: list[float] = []
    lock = threading.Lock()

    def loop(seed: int) -> None:
        rng, mine, connection = random.Random(seed), [], raw_client(base)

        def send() -> None:
            owner, job_id = rng.choice(targets)
            get(connection, f"/api/ai/queue/{job_id}", owner)

        span = paced(rate / threads, seconds, warmup, send, lambda *call: mine.append(call))
        connection.close()
        with lock:
            latencies.extend(mine)
            spans.append(span)

    workers = [threading.Thread(target=loop, args=(os.getpid() * 100 + i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put(("poll", latencies, max(spans)))


def lister_process(base: str, seconds: float, warmup: float, rate: float, out) -> None:
    """`GET /api/ai/queue?status=all` of a random key, `rate` per second (a dashboard's refreshes)."""
    latencies: list[tuple[float, float]] = []
    if rate <= 0:  # `--list-rate 0`: no lists (to see what they add to the status reads' tail)
        out.put(("list", latencies, 0.0))
        return
    connection = raw_client(base)
    span = paced(rate, seconds, warmup, lambda: get(connection, "/api/ai/queue?status=all",
                                                    random.choice(list(KEYS))), lambda *call: latencies.append(call))
    out.put(("list", latencies, span))


def start_busy_job(base: str, owner: str, seeds: list[tuple[str, str]], args) -> str:
    """Wait (bounded) for the seed jobs to end, enqueue the long job and return its id once it runs."""
    ended = ("succeeded", "failed", "cancelled")
    with httpx.Client(timeout=30) as client:
        def status(who: str, job_id: str) -> str:
            return client.get(f"{base}/api/ai/queue/{job_id}", headers=headers(who)).json()["status"]

        deadline = time.time() + 120
        while time.time() < deadline and not all(status(o, j) in ended for o, j in seeds):
            time.sleep(0.2)
        busy = client.post(base + "/api/ai/queue", headers=headers(owner), json=tiny_body(
            prompt="busy", resolution=args.busy_resolution, num_frames=args.busy_frames)).json()
        job_id = busy["generations"][0]["generation_id"]
        while time.time() < deadline and status(owner, job_id) == "queued":
            time.sleep(0.05)
    return job_id


def in_flight_share(intervals: list[tuple[float, float | None]], start: float, end: float) -> float:
    """The share of [start, end] during which at least one of the (started_at, completed_at) intervals ran."""
    covered, reach = 0.0, start
    for begin, finish in sorted((b, f if f is not None else end) for b, f in intervals):
        begin, finish = max(begin, reach), min(finish, end)
        if finish > begin:
            covered, reach = covered + finish - begin, finish
    return covered / (end - start)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def runqueue_wait_seconds(pid: int) -> float:
    """How long a process's main thread (the API's event loop) has waited, runnable, for a core."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


def quantile_ms(values: list[float], q: int) -> float:
    """The q-th percentile of latencies in seconds, in ms (NaN with fewer than two)."""
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) >= 2 else float("nan")


def ms(values: list[float], q: int) -> str:
    return "-" if len(values) < 2 else f"{quantile_ms(values, q):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time, after the warm-up")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--subscribers", type=int, default=54)
    parser.add_argument("--rate", type=float, default=550.0, help="status reads per second, all pollers together")
    parser.add_argument("--list-rate", type=float, default=20.0, help="list calls per second")
    parser.add_argument("--pollers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="connections per poller process")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per key")
    parser.add_argument("--busy-resolution", default="512x512", help="the long job's size")
    parser.add_argument("--busy-frames", type=int, default=481)
    parser.add_argument("--serve-args", default="", help="more `ltx-server serve` options, e.g. '--worker-nice 0'")
    parser.add_argument("--client-cpus", default="",
                        help="run the load processes on these CPUs only (e.g. 1), as remote clients would leave "
                             "the API's core alone; pair with --serve-args '--api-cpus 0'")
    parser.add_argument("--runs", type=int, default=1,
                        help="fresh servers measured one after another: one row per run and their spread (a "
                             "p99 over one run moves with the machine's other load)")
    parser.add_argument("--goal-ms", type=float, default=5.0, help="the status reads' p99 goal (--runs counts "
                                                                    "the runs within it)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the counts (requests, subscribers, misses) here "
                                                  "(a list of them with --runs)")
    args = parser.parse_args()
    if args.runs == 1:
        report, counts = measure(args)
        print_table(["what", "value", "notes"], report, args.markdown)
    else:
        counts = [measure(args)[1] for _ in range(args.runs)]
        print_table(*runs_table(counts, args.goal_ms), args.markdown)
    if args.json:
        args.json.write_text(json.dumps(counts, indent=1))


def runs_table(runs: list[dict], goal_ms: float) -> tuple[list[str], list[list[str]]]:
    """One row per run (`--runs`) and a last row with the median and the worst of each column."""
    # (heading, counts key, the worst is the lowest)
    columns = [("status read p99 ms", "poll_p99_ms", False), ("p50 ms", "poll_p50_ms", False),
               ("requests/s", "rps", True), ("loop's wait for a core ms/s", "waited_ms_per_s", False),
               ("job in flight %", "in_flight_pct", True)]
    runs = [{**run, "in_flight_pct": run["in_flight_share"] * 100} for run in runs]
    rows = [[str(i + 1), *(f"{run[key]:.1f}" for _name, key, _low in columns), f"{run['missed']} / {run['foreign']}"]
            for i, run in enumerate(runs)]
    summary = [f"median (worst) of {len(runs)}"]
    for _name, key, low in columns:
        values = [run[key] for run in runs]
        summary.append(f"{statistics.median(values):.1f} ({(min if low else max)(values):.1f})")
    within = sum(run["poll_p99_ms"] <= goal_ms for run in runs)
    summary.append(f"{sum(r['missed'] for r in runs)} / {sum(r['foreign'] for r in runs)}; "
                   f"p99 within {goal_ms:g} ms in {within} of {len(runs)}")
    return ["run", *(name for name, _key, _low in columns), "completions missed / of another key"], [*rows, summary]


def measure(args) -> tuple[list[list[str]], dict]:
    """One fresh server, loaded and measured: the report's rows and the counts."""
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as data_dir:
        server = LiveServer(Path(data_dir), ["--api-keys", ",".join(f"{o}:{k}" for o, k in KEYS.items()),
                                             "--rate-limit", "0", "--max-active-jobs", "0", "--keepalive-seconds", "2",
                                             *args.serve_args.split()])
        server.start(timeout=180)
        own_cpus = os.sched_getaffinity(0)
        if args.client_cpus:  # after the start: the server's processes keep every CPU they were given
            os.sched_setaffinity(0, parse_cpu_list(args.client_cpus))
        try:
            return run(server, args, context)
        finally:
            server.cleanup()
            os.sched_setaffinity(0, own_cpus)  # the next run's server starts with every CPU again


def run(server: LiveServer, args, context) -> tuple[list[list[str]], dict]:
    base, out = server.base, context.Queue()
    owners = list(KEYS)
    # Seed ids give the pollers something to read; the long job (`start_busy_job`) comes later.
    targets = []
    with httpx.Client(timeout=30) as client:
        for owner in owners:
            reply = client.post(base + "/api/ai/queue", headers=headers(owner), json=tiny_body(prompt=f"{owner} seed"))
            targets.append((owner, reply.json()["generations"][0]["generation_id"]))
    until = time.time() + args.seconds + 600  # a bound only: subscribers stop once every job has ended
    stop_listening = context.Event()
    per_process = [owners[i % len(owners)] for i in range(args.subscribers)]
    ready = [context.Event() for _ in range(3)]
    subs = [context.Process(target=subscriber_process,
                            args=(i, base, per_process[i::3], until, ready[i], stop_listening, out))
            for i in range(3)]
    everyone = {(p, i, owner) for p in range(3) for i, owner in enumerate(per_process[p::3])}
    for process in subs:
        process.start()
    for event in ready:
        event.wait(90)
    # The long job starts when the subscribers are connected and the seeds done, so it is in flight
    # through the measured window however long the set-up took.
    busy_id = start_busy_job(base, owners[0], targets, args)
    targets.append((owners[0], busy_id))
    worker = server.worker_pid()
    cpu_before = {pid: cpu_seconds(pid) for pid in (worker, server.process.pid, *(p.pid for p in subs))}
    waited_before = runqueue_wait_seconds(server.process.pid)
    started = time.time()
    ends = started + args.warmup + args.seconds
    load = [context.Process(target=enqueuer_process, args=(base, o, args.jobs, ends, out)) for o in owners]
    load += [context.Process(target=poller_process, args=(base, targets, args.seconds, args.warmup,
                                                                     args.rate / args.pollers, args.threads, out))
             for _ in range(args.pollers)]
    load.append(context.Process(target=lister_process, args=(base, args.seconds, args.warmup, args.list_rate, out)))
    for process in load:
        process.start()
    results: dict[str, list] = {"enqueue": [], "poll": [], "list": [], "sse": []}
    pending = len(load)
    while pending:
        item = out.get(timeout=args.warmup + args.seconds + 120)
        results[item[0]].append(item[1:])
        pending -= item[0] != "sse"
    window = time.time() - started
    waited = (runqueue_wait_seconds(server.process.pid) - waited_before) / window
    # The load processes have put their results and exited, but are not yet reaped: /proc still has them.
    cores = {pid: (cpu_seconds(pid) - cpu_before.get(pid, 0.0)) / window
             for pid in [*cpu_before, *(p.pid for p in load)]}
    accepted = {job_id: owner for owner, ids, _lat in results["enqueue"] for job_id in ids}
    accepted.update({job_id: owner for owner, job_id in targets})
    # Wait (bounded) for the accepted jobs to end, then give the subscribers a moment to receive them.
    deadline = time.time() + 300
    with httpx.Client(timeout=10) as client:
        # The long job has kept the worker busy through the window; the small jobs queued behind it need not wait.
        client.delete(f"{base}/api/ai/queue/{busy_id}", headers=headers(owners[0]))
        while time.time() < deadline:
            states = [client.get(f"{base}/api/ai/queue/{i}", headers=headers(o)).json()["status"]
                      for i, o in accepted.items()]
            if all(s in ("succeeded", "failed", "cancelled") for s in states):
                break
            time.sleep(1)
    completed_at = dict(server.db("SELECT id, completed_at FROM jobs WHERE status IN ('succeeded', 'failed')"))
    running = server.db("SELECT started_at, completed_at FROM jobs WHERE started_at IS NOT NULL")
    busy = in_flight_share(running, started + args.warmup, ends)
    owner_of = dict(server.db("SELECT id, owner FROM jobs"))
    time.sleep(3)  # the last completions reach the subscribers (keep-alives every 2 s wake them to stop)
    stop_listening.set()
    while len(results["sse"]) < len(subs):
        item = out.get(timeout=max(1.0, until - time.time()) + 60)
        results[item[0]].append(item[1:])
    for process in [*subs, *load]:
        process.join(timeout=10)
    cpu = {"worker": cores[worker], "API": cores[server.process.pid],
           "load generator": sum(used for pid, used in cores.items() if pid not in (worker, server.process.pid))}
    return tally(args, results, everyone, accepted, completed_at, owner_of, busy, cpu, waited)


def tally(args, results: dict[str, list], everyone: set[tuple], accepted: dict[str, str],
          completed_at: dict[str, float], owner_of: dict[str, str], busy: float,
          cpu: dict[str, float], waited: float) -> tuple[list[list[str]], dict]:
    """The table's rows and the counts (`--json`) from what the load processes reported."""
    owners = list(KEYS)
    polls = [latency for calls, _s in results["poll"] for latency, _lag in calls]
    lags = [lag for calls, _s in results["poll"] for _latency, lag in calls]
    poll_span = max(span for _lat, span in results["poll"])  # the real time the polls took
    lists = [latency for calls, _s in results["list"] for latency, _lag in calls]
    enqueues = [x for _o, _i, lat in results["enqueue"] for x in lat]
    received = [row for (rows,) in results["sse"] for row in rows]
    delivery = [arrived - completed_at[job_id] for _sub, job_id, arrived in received if job_id in completed_at]
    got: dict[tuple, set[str]] = {sub: set() for sub in everyone}
    for sub, job_id, _arrived in received:
        got.setdefault(sub, set()).add(job_id)
    owed = {o: {j for j, who in owner_of.items() if who == o and j in completed_at} for o in owners}
    counted = sum(1 for ids in got.values() if ids)
    missing = sum(len(owed[sub[2]] - ids) for sub, ids in got.items())
    foreign = sum(1 for sub, ids in got.items() for j in ids if owner_of.get(j) != sub[2])
    total = len(polls) + len(lists) + len(enqueues)
    counts = {"polls": len(polls), "lists": len(lists), "accepted": len(accepted), "deliveries": len(delivery),
              "subscribers": args.subscribers, "subscribers_with_events": counted, "owed": sum(map(len, owed.values())),
              "missed": missing, "foreign": foreign, "in_flight_share": busy, "rps": total / poll_span,
              "poll_p50_ms": quantile_ms(polls, 50), "poll_p99_ms": quantile_ms(polls, 99),
              "waited_ms_per_s": waited * 1000}
    return [
        ["requests/s (polls + lists + enqueues)", f"{total / poll_span:.0f}",
         f"{len(polls)} polls, {len(lists)} lists in {poll_span:.1f} s after {args.warmup:g} s of warm-up; "
         f"{len(enqueues)} enqueues"],
        ["GET /api/ai/queue/{id} p50 / p99 ms", f"{ms(polls, 50)} / {ms(polls, 99)}",
         f"{len(polls) / poll_span:.0f} req/s answered (open loop at {args.rate:g}/s, timed from each call's "
         f"schedule) from "
         f"{args.pollers} processes x {args.threads} connections, worker busy"],
        ["load generator's lag p50 / p99 ms", f"{ms(lags, 50)} / {ms(lags, 99)}",
         "how late a status read was sent although its connection was free (counted in its latency)"],
        ["GET /api/ai/queue?status=all p50 / p99 ms", f"{ms(lists, 50)} / {ms(lists, 99)}",
         f"{len(lists)} calls (open loop at {args.list_rate:g}/s)"],
        ["POST /api/ai/queue p50 / p99 ms", f"{ms(enqueues, 50)} / {ms(enqueues, 99)}",
         f"{len(accepted)} jobs accepted over {len(owners)} keys"],
        ["SSE delivery p50 / p99 ms (completed_at -> read)", f"{ms(delivery, 50)} / {ms(delivery, 99)}",
         f"{len(delivery)} deliveries"],
        ["SSE subscribers that received events / connected", f"{counted} / {args.subscribers}",
         f"{len(owners)} keys; {sum(len(v) for v in owed.values())} completions owed per key set"],
        ["CPU used during the load (cores)", ", ".join(f"{name} {used:.2f}" for name, used in cpu.items()),
         f"a job in flight {busy:.0%} of the measured time; the load generator runs on the same machine "
         f"({os.cpu_count()} cores{', on CPU ' + args.client_cpus if args.client_cpus else ''})"],
        ["API event loop: waited for a core (ms per s)", f"{waited * 1000:.1f}",
         "its thread runnable but not running (the kernel's schedstat): the cores' share of the latency"],
        ["completions missed / of another key", f"{missing} / {foreign}", "every subscriber, every completion"],
    ], counts


if __name__ == "__main__":
    main()
