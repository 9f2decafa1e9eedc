"""`ltx-server worker`: one worker process against a given store (what `serve` starts per GPU)."""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from pipeline.engine import Engine, EngineSpec
from pipeline.errors import PipelineError
from server.core.config import add_options, from_args
from server.core.errors import CommandError
from server.entrypoints.logs import configure_logging
from server.queue import JobStore
from server.worker.worker import Worker

log = logging.getLogger("ltx_server.worker")

WORKER_OPTIONS = ("store", "data_dir", "weights", "lease_seconds", "plan", "compile", "engine", "log_level",
                  "job_timeout")


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
    configure_logging(config.log_level)
    factory = engine_factory(config.engine)
    spec = EngineSpec(weights=config.weights, data_dir=config.data_dir, device=args.device, plan=config.plan,
                      compile_blocks=config.compile)
    store = JobStore(config.store_url)
    worker = Worker(store, lambda: factory(spec), Path(config.data_dir), config.lease_seconds, args.worker_id,
                    device_hint=args.device, job_timeout=config.job_timeout,
                    progress_file=Path(args.progress_file) if args.progress_file else None)
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
