"""`ltx-server worker`: one worker process against a given store (what `serve` starts per GPU).

With `--gpus-per-job N` (N > 1) the process is a group launcher (`server.worker.group`): it
starts N rank processes of this same command with `--group-rank R --group-address HOST:PORT`,
which run one job at a time together.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pipeline.engine import Engine, EngineSpec, RankGroup
from pipeline.errors import PipelineError
from server.core.config import add_options, from_args
from server.core.errors import CommandError
from server.entrypoints.logs import configure_logging
from server.queue import JobStore
from server.results import open_results
from server.worker.group import EXIT_GROUP_BROKEN, GroupBroken, GroupLauncher, GroupLeader, run_follower
from server.worker.worker import Worker, new_worker_id

log = logging.getLogger("ltx_server.worker")

WORKER_OPTIONS = ("store", "data_dir", "weights", "lease_seconds", "plan", "compile", "engine", "log_level",
                  "log_format", "results", "s3_endpoint_url", "gpus_per_job", "lora_dir", "job_timeout")
COLLECTIVE_TIMEOUT_ENV = "LTX_COLLECTIVE_TIMEOUT"  # seconds a collective may wait (default RankGroup's 300)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `worker` sub-command."""
    parser = subparsers.add_parser(
        "worker",
        help="run one generation worker against a job store",
        description="Load the model once and run jobs from the store until stopped (SIGTERM returns the "
        "current job to the queue).",
    )
    add_options(parser, WORKER_OPTIONS)
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda:1 (default: cuda if visible, else cpu)")
    parser.add_argument("--worker-id", default=None, help="id recorded on claimed jobs (default: host-pid-random)")
    # Set by the group launcher on the rank processes it starts; not for people.
    parser.add_argument("--group-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--group-address", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--progress-file", default=None,
                        help="file touched on every progress report (the supervisor's watchdog reads its mtime)")
    parser.set_defaults(handler=run)


def engine_factory(name: str) -> Callable[[EngineSpec], Engine]:
    """`MODULE:FUNCTION` -> that function; empty -> `Engine.load`."""
    if not name:
        return Engine.load
    module_name, sep, function = name.partition(":")
    if not sep or not module_name or not function:
        raise CommandError(f"--engine must be MODULE:FUNCTION, got {name!r}")
    try:
        return getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise CommandError(f"--engine {name}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Load, then loop over jobs until SIGTERM/SIGINT."""
    config = from_args(args)
    configure_logging(config.log_level, config.log_format)
    if config.gpus_per_job < 1:
        raise CommandError(f"--gpus-per-job must be at least 1, got {config.gpus_per_job}")
    if config.gpus_per_job > 1 and args.group_rank is None:
        return run_launcher(args, config.gpus_per_job)
    try:
        results = open_results(config.results, config.data_dir, config.s3_endpoint_url)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if config.gpus_per_job > 1:
        return run_group_rank(args, config, results)
    factory = engine_factory(config.engine)
    spec = EngineSpec(weights=config.weights, data_dir=config.data_dir, device=args.device, plan=config.plan,
                      compile_blocks=config.compile, lora_dir=config.lora_path)
    store = JobStore(config.store_url)
    worker = Worker(store, lambda: factory(spec), Path(config.data_dir), config.lease_seconds, args.worker_id,
                    device_hint=args.device, results=results, job_timeout=config.job_timeout,
                    progress_file=progress_file(args))
    worker.install_signal_handlers()
    try:
        worker.load()
    except PipelineError as exc:  # out of memory at load, unusable weights: one line; the supervisor restarts it
        raise CommandError(f"worker {worker.worker_id}: {exc}") from None
    log.info("worker %s ready", worker.worker_id)
    try:
        worker.run_forever()
    finally:
        store.close()
    return 0


def run_launcher(args: argparse.Namespace, size: int) -> int:
    """Start and watch the group's N rank processes (this same command, each with its rank)."""
    worker_id = args.worker_id or new_worker_id()

    def rank_command(rank: int, address: str) -> list[str]:
        return [sys.executable, "-m", "server.entrypoints.cli", *_own_arguments(),
                "--worker-id", worker_id, "--group-rank", str(rank), "--group-address", address]

    launcher = GroupLauncher(rank_command, size, label=f"worker group {worker_id}")
    launcher.install_signal_handlers()
    return launcher.run()


def run_group_rank(args: argparse.Namespace, config, results) -> int:  # noqa: ANN001 - ServerConfig, ResultStore
    """One rank of a group: rank 0 serves jobs from the store, the others follow it."""
    timeout = float(os.environ.get(COLLECTIVE_TIMEOUT_ENV) or 300.0)
    group = RankGroup(args.group_rank, config.gpus_per_job, args.group_address, timeout)
    spec = EngineSpec(weights=config.weights, data_dir=config.data_dir, device=args.device, plan=config.plan,
                      compile_blocks=config.compile, group=group)
    factory = engine_factory(config.engine)
    if group.rank != 0:
        stop = threading.Event()
        _stop_on_signal(stop)
        engine = factory(spec)
        log.info("worker %s rank %d of %d ready on %s", args.worker_id, group.rank, group.size, engine.info.device)
        code = run_follower(engine, stop)
        os._exit(code)  # skip interpreter teardown: a broken NCCL/gloo group can hang in it
    store = JobStore(config.store_url)
    worker = GroupLeader(store, lambda: factory(spec), Path(config.data_dir), lease_seconds=config.lease_seconds,
                         worker_id=args.worker_id, device_hint=f"{group.size} ranks", results=results,
                         job_timeout=config.job_timeout, progress_file=progress_file(args))
    worker.install_signal_handlers()
    code = 0
    try:
        worker.load()
        log.info("worker %s ready (rank 0 of %d)", worker.worker_id, group.size)
        worker.run_forever()
        worker.group_engine.close()
    except GroupBroken as exc:
        log.error("worker %s: its GPU group must restart: %s", worker.worker_id, exc)
        code = EXIT_GROUP_BROKEN
    finally:
        store.close()
    os._exit(code)


def progress_file(args: argparse.Namespace) -> Path | None:
    """The file the supervisor's watchdog watches (touched on every progress report), if it gave one."""
    return Path(args.progress_file) if args.progress_file else None


def _own_arguments() -> list[str]:
    """This process's command line after the interpreter (`worker ...`), without --worker-id."""
    argv, kept, skip = sys.argv[1:], [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--worker-id":
            skip = True
            continue
        if item.startswith("--worker-id="):
            continue
        kept.append(item)
    return kept


def _stop_on_signal(stop: threading.Event) -> None:
    """Followers finish the job in flight (the leader cancels it within a step) and stop when idle."""
    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
