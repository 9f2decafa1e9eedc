"""`ltx-server serve`: the API plus its worker processes, under one supervisor.

The API runs in this process (uvicorn); generation runs only in the worker processes the
supervisor starts: one per visible GPU, or one CPU worker for the tiny model.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from server.auth import KeyConfigError, KeyRing, is_loopback
from server.cli import CommandError
from server.config import ServerConfig, add_options, from_args

log = logging.getLogger("ltx_server.serve")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="run the Oxen-compatible API server with its GPU workers",
        description="Serve the Oxen inference API for ltx-2-3-quality-image-to-video. Every option "
        "can also be set with the LTX_* environment variable shown in its help.",
    )
    add_options(parser)
    parser.set_defaults(handler=run)


def configure_logging(level: str) -> None:
    """One log format for the API, the supervisor and the workers."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )


def check_exposure(config: ServerConfig, keys: KeyRing) -> str | None:
    """Refuse a non-loopback address without keys unless --insecure; returns a notice to log."""
    if keys.enabled:
        return None
    if not is_loopback(config.host):
        if not config.insecure:
            raise CommandError(
                f"refusing to listen on {config.host} with no API keys configured; set --api-keys-file "
                "or LTX_API_KEYS, listen on 127.0.0.1, or pass --insecure to serve everyone without keys"
            )
        return (f"WARNING: no API keys configured and --insecure: anyone who can reach {config.host} "
                "may use this server.")
    return "No API keys configured: accepting requests from loopback clients only."


def run(args: argparse.Namespace) -> int:
    """Start the workers, then serve HTTP until interrupted; stop the workers on the way out."""
    import dataclasses

    import uvicorn

    config = from_args(args)
    configure_logging(config.log_level)
    try:
        keys = KeyRing.load(config.api_keys_file, config.api_keys)
    except KeyConfigError as exc:
        raise CommandError(str(exc)) from None
    notice = check_exposure(config, keys)
    if notice:
        log.warning("%s", notice)
    config.data_dir.mkdir(parents=True, exist_ok=True)

    from server.app import create_app
    from server.store import JobStore
    from server.supervisor import Supervisor

    store = JobStore(config.store_url)

    def supervise(count: int, gpu_ids: list[int]) -> Supervisor:
        worker_args = ["--plan", config.plan] + (["--compile"] if config.compile else [])
        supervisor = Supervisor(store, config.store_url, config.data_dir, config.weights, count,
                                config.lease_seconds, gpu_ids, config.log_level, worker_args)
        supervisor.start()
        return supervisor

    # The tiny model always gets CPU-style scheduling (one worker unless told otherwise), so its
    # worker can start now and import torch while this process does the same.
    supervisor = supervise(config.workers or 1, []) if config.weights == "tiny" else None

    # Resolve the weights here too: it tells how many workers a real model gets (one per GPU)
    # and gives the notice shown in the log and in /api/ai/models.
    import torch

    from pipeline.components import WeightsError
    from pipeline.weights_location import resolve_weights  # builds the tiny model under a file lock

    try:
        choice = resolve_weights(config.weights, config.data_dir)
    except WeightsError as exc:
        if supervisor:
            supervisor.stop()
        raise CommandError(str(exc)) from None
    if choice.notice:
        banner = "!" * 78
        log.warning("%s\n%s\n%s", banner, choice.notice, banner)
    log.info("weights: %s (%s)", choice.path, choice.version_text)
    capacity = None
    if choice.device.startswith("cuda") and not choice.smoke_test:
        capacity = log_memory_plan(config.plan)
    if supervisor is None:
        gpu_ids: list[int] = []
        if choice.device.startswith("cuda") and not choice.smoke_test:
            gpu_ids = list(range(torch.cuda.device_count()))
        supervisor = supervise(config.workers or max(1, len(gpu_ids)), gpu_ids)
    count = len(supervisor.slots)
    config = dataclasses.replace(config, weights_notice=choice.notice, gpu_capacity=capacity)
    app = create_app(config, store=store, keys=keys)
    log.info("serving on http://%s:%d/api with %d worker(s); store %s", config.host, config.port, count,
             _redact(config.store_url))
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default action that
    # would kill this process before the workers are stopped, so make it a no-op here.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level,
                    timeout_graceful_shutdown=5)
    finally:
        supervisor.stop()
        store.close()
    return 0


def log_memory_plan(requested: str) -> tuple[str, int] | None:
    """Print the memory plan of each visible GPU and its estimates per request size, at start.

    Returns (plan, bytes) of the smallest GPU: the API admits only requests that fit there.
    """
    import torch

    from pipeline.memory_plan import PlanError, resolve_plan, summary

    smallest: tuple[str, int] | None = None
    for index in range(torch.cuda.device_count()):
        vram = torch.cuda.get_device_properties(index).total_memory
        try:
            plan = resolve_plan(requested, vram)
        except PlanError as exc:
            raise CommandError(f"GPU {index}: {exc}") from None
        log.info("GPU %d: %s", index, summary(plan, vram))
        if smallest is None or vram < smallest[1]:
            smallest = (plan, vram)
    return smallest


def _redact(url: str) -> str:
    """A store URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<store>"

