"""Which CPUs the API process and the workers run on (`serve --api-cpus`).

The API answers in milliseconds; a worker's CPU work (a CPU model, the launch loop, muxing) is
throughput work. Niceness (`--worker-nice`) makes the kernel prefer the API, but a woken API still
waits for the current task's time slice on its core. Measured on the 2-core build machine
(`bench/load.py`, RELIABILITY.md "Load"), the API's event loop waited ~60-100 ms per second for a
core while a worker computed; given a core of its own it waited 10-17 ms. Pinning is what servers
that care about tail latency do (nginx's worker_cpu_affinity, the numactl/taskset advice for
GPU inference servers); the standard library's `os.sched_setaffinity` applies it.
"""

from __future__ import annotations


def parse_cpu_list(text: str) -> set[int]:
    """`"0-2,5"` -> {0, 1, 2, 5} (the kernel's cpulist format); ValueError with a sentence otherwise."""
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError(f"--api-cpus: {part!r} is not a CPU number or range (e.g. 0 or 0-1,4).")
        low, high = int(first), int(last or first)
        if high < low:
            raise ValueError(f"--api-cpus: the range {part!r} runs backwards.")
        cpus.update(range(low, high + 1))
    if not cpus:
        raise ValueError("--api-cpus names no CPU.")
    return cpus


def workers_cpus(api: set[int], available: set[int], workers: int) -> set[int]:
    """The workers' CPUs: what `available` has besides the API's; ValueError when that cannot be."""
    unknown = sorted(api - available)
    if unknown:
        raise ValueError(f"--api-cpus: CPU {', '.join(map(str, unknown))} is not available to this process "
                         f"(available: {format_cpu_list(available)}).")
    rest = available - api
    if workers and not rest:
        raise ValueError(f"--api-cpus {format_cpu_list(api)} leaves no CPU for the workers "
                         f"(available: {format_cpu_list(available)}).")
    return rest


def format_cpu_list(cpus: set[int]) -> str:
    """{0, 1, 2, 5} -> `"0-2,5"`."""
    ordered, parts = sorted(cpus), []
    start = previous = None
    for cpu in [*ordered, None]:
        if cpu is not None and previous is not None and cpu == previous + 1:
            previous = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = cpu
    return ",".join(parts)
