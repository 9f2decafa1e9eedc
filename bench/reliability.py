"""The reliability battery's long runs, as one table for RELIABILITY.md: random kill -9 cycles against a
live server, property-based requests from /openapi.json, the hand-written bad-input table and the
access matrix.

    python bench/reliability.py [--cycles 100] [--fuzz 500] [--only chaos,fuzz,table] [--markdown]

`--fuzz N` asks for N positive and N negative cases per API operation (19 operations); Hypothesis
stops early where an operation has few distinct inputs, so 500 gives about 10,000 requests. The
bad-input table and the access matrix are the pytest module that holds them
(tests/integration/server/test_hostile_input.py), run here with their counts.
Everything runs on 127.0.0.1 with the tiny model.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "support"), str(ROOT / "tests" / "integration" / "server")]

from table import print_table  # noqa: E402


def chaos_rows(cycles: int, seed: int) -> list[list[str]]:
    from chaos import run_chaos

    with tempfile.TemporaryDirectory() as data_dir:
        report = run_chaos(Path(data_dir) / "data", cycles=cycles, seed=seed, workers=2,
                           log=lambda line: print(line, file=sys.stderr))
    kills = ", ".join(f"{target} {count}" for target, count in sorted(report.kills.items()))
    stages = ", ".join(f"{stage} {count}" for stage, count in sorted(report.stages_at_kill.items()))
    return [
        ["kill -9 cycles (faults injected)", str(report.cycles), f"{kills}; in-flight stages at kill: {stages}"],
        ["jobs accepted / not terminal at the end", f"{len(report.accepted)} / {len(report.lost)}",
         ", ".join(f"{k} {v}" for k, v in sorted(report.statuses.items()))
         + "".join(f"; still {state}: {n}" for state, n in sorted(Counter(
             entry.rsplit(": ", 1)[-1] for entry in report.lost).items()))],
        ["broken or half-written files", str(len(report.broken_files) + len(report.leftovers)),
         "each succeeded MP4 decoded (PyAV) with the requested 9 frames; no .partial/.f32 left"],
        ["untruthful failure messages", str(len(report.untruthful)), ""],
        ["double completions", str(len(report.double_completions)), "completion events per job in the store"],
        ["SSE completions missed / of another key", f"{len(report.missed_events)} / {len(report.foreign_events)}",
         "4 reconnecting subscribers over 2 keys"],
        ["chaos run time", f"{report.seconds:.0f} s",
         f"{report.backlog} jobs still to run after the last kill, drained in {report.drain_seconds:.0f} s"],
    ]


def fuzz_rows(examples: int) -> list[list[str]]:
    from openapi_fuzz import fuzz

    with tempfile.TemporaryDirectory() as data_dir:
        started = time.monotonic()
        report = fuzz(Path(data_dir), examples_per_mode=examples, seed=1)
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(report.by_status.items()))
    return [["requests fuzzed / 5xx", f"{report.requests} / {len(report.server_errors)}",
             f"{report.operations} operations, positive + negative; {statuses}; "
             f"{time.monotonic() - started:.0f} s"]]


def table_rows() -> list[list[str]]:
    import test_hostile_input as hostile

    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               str(ROOT / "tests" / "integration" / "server" / "test_hostile_input.py")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    passed = result.returncode == 0
    bad = len(hostile.BAD) + len(hostile.PRIVATE) + 1  # + the redirect to a private address
    # The matrix (8 per-id routes, the lists and the others x 3 bad credentials, then another key on the
    # per-id routes and lists), 6 signed-URL abuses, 6 traversal paths, 6 forwarding headers, 1 event stream.
    access = 3 * (8 + len(hostile.LISTS) + len(hostile.OTHER)) + 8 + len(hostile.LISTS) + 6 + 6 + 6 + 1
    summary = result.stdout.strip().splitlines()[-1]
    return [
        ["bad inputs tried / mishandled", f"{bad} / {0 if passed else '?'}",
         f"plus {len(hostile.GOOD_IMAGES)} unusual valid images accepted; pytest: {summary}"],
        ["access cases / leaks", f"{access} / {0 if passed else '?'}",
         "endpoints x no/wrong/unprefixed key, another key, signed URLs, traversal, forwarding headers"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--fuzz", type=int, default=500)
    parser.add_argument("--only", default="chaos,fuzz,table")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    parts = args.only.split(",")
    rows: list[list[str]] = []
    if "table" in parts:
        rows += table_rows()
    if "fuzz" in parts:
        rows += fuzz_rows(args.fuzz)
    if "chaos" in parts:
        rows += chaos_rows(args.cycles, args.seed)
    print_table(["what", "figure", "notes"], rows, args.markdown)


if __name__ == "__main__":
    main()
