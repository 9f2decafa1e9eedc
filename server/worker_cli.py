"""`ltx-server worker`: one worker process against a given store (what `serve` starts per GPU)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from server.config import add_options, from_args

log = logging.getLogger("ltx_server.worker")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `worker` sub-command."""
    parser = subparsers.add_parser(
        "worker",
        help="run one generation worker against a job store",
        description="Load the model once and run jobs from the store until stopped (SIGTERM returns the "
        "current job to the queue).",
    )
    add_options(parser, ("store", "data_dir", "weights", "lease_seconds", "plan", "compile", "log_level"))
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda:1 (default: cuda if visible, else cpu)")
    parser.add_argument("--worker-id", default=None, help="id recorded on claimed jobs (default: host-pid-random)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load, then loop over jobs until SIGTERM/SIGINT."""
    from server.serve_cli import configure_logging
    from server.store import JobStore
    from server.worker import Worker

    config = from_args(args)
    configure_logging(config.log_level)
    store = JobStore(config.store_url)
    worker = Worker(store, Path(config.data_dir), config.weights, args.device, config.lease_seconds, args.worker_id,
                    plan=config.plan, compile_blocks=config.compile)
    worker.install_signal_handlers()
    worker.load()
    log.info("worker %s ready", worker.worker_id)
    try:
        worker.run_forever()
    finally:
        store.close()
    return 0
