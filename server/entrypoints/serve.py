"""`ltx-server serve`: the API plus its worker processes, under one supervisor.

The API runs in this process (uvicorn) and never imports torch: the weights and the GPUs are
probed in a short child process (`server.entrypoints.probe`), the tiny model is built by its
worker, and generation runs only in the worker processes the supervisor starts: one per visible
GPU (or one per group of `--gpus-per-job` GPUs), or one CPU worker for the tiny model. The
janitor (recovery, retention) runs in the app.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys

import uvicorn
from sqlalchemy.engine import make_url

from server.api.main import create_app
from server.api.services.janitor import Janitor
from server.core.auth import KeyConfigError, KeyRing, is_loopback
from server.core.config import ServerConfig, add_options, from_args
from server.core.cpus import format_cpu_list, parse_cpu_list, workers_cpus
from server.core.errors import CommandError
from server.entrypoints.logs import configure_logging
from server.entrypoints.probe import run_probe
from server.queue import JobStore
from server.results import open_results
from server.worker.supervisor import Supervisor

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


def worker_command(config: ServerConfig) -> list[str]:
    """The `ltx-server worker` command line of this server's workers (the supervisor adds --worker-id)."""
    command = [
        sys.executable, "-m", "server.entrypoints.cli", "worker",
        "--store", config.store_url, "--data-dir", str(config.data_dir), "--weights", config.weights,
        "--lease-seconds", str(config.lease_seconds), "--log-level", config.log_level, "--plan", config.plan,
        "--job-timeout", str(config.job_timeout),
    ]
    if config.compile:
        command.append("--compile")
    if config.engine:
        command += ["--engine", config.engine]
    command += ["--log-format", config.log_format, "--results", config.results]
    if config.s3_endpoint_url:
        command += ["--s3-endpoint-url", config.s3_endpoint_url]
    if config.gpus_per_job > 1:
        command += ["--gpus-per-job", str(config.gpus_per_job)]
    if config.lora_dir:
        command += ["--lora-dir", str(config.lora_path)]
    return command


def plan_workers(config: ServerConfig) -> tuple[ServerConfig, list[int]]:
    """Probe the weights and GPUs (in a child): the GPU ids to use, the notice and the admission capacity."""
    if config.weights == "tiny":  # CPU-style scheduling, nothing to probe: its worker builds the model
        return config, []
    found = run_probe(config.weights, config.data_dir, config.plan, gpus_per_job=config.gpus_per_job)
    if not found["ok"]:
        raise CommandError(found["error"])
    if found["notice"]:
        banner = "!" * 78
        log.warning("%s\n%s\n%s", banner, found["notice"], banner)
    log.info("weights: %s (%s)", found["path"], found["version_text"])
    for gpu in found["gpus"]:
        log.info("GPU %d: %s", gpu["index"], gpu["summary"])
    capacity = None
    if found["gpus"]:  # requests must fit the smallest GPU they may land on
        smallest = min(found["gpus"], key=lambda gpu: gpu["vram_bytes"])
        capacity = (smallest["plan"], smallest["vram_bytes"], config.gpus_per_job)
    config = dataclasses.replace(config, weights_notice=found["notice"], gpu_capacity=capacity)
    return config, [gpu["index"] for gpu in found["gpus"]]


def worker_count(config: ServerConfig, gpu_ids: list[int]) -> int:
    """Workers to start: `--workers`, else one per GPU, or one per group of `--gpus-per-job` GPUs."""
    per_job = config.gpus_per_job
    if per_job < 1:
        raise CommandError(f"--gpus-per-job must be at least 1, got {per_job}")
    if per_job > 1 and gpu_ids and len(gpu_ids) < per_job:
        raise CommandError(f"--gpus-per-job {per_job} needs {per_job} GPUs; {len(gpu_ids)} are visible")
    groups = len(gpu_ids) // per_job
    if per_job > 1 and gpu_ids and len(gpu_ids) % per_job:
        log.warning("%d GPU(s) left out: %d GPUs do not divide into groups of %d", len(gpu_ids) % per_job,
                    len(gpu_ids), per_job)
    if per_job > 1 and not gpu_ids:
        log.warning("--gpus-per-job %d without a GPU: %d CPU ranks over gloo per job (a testing mode, not faster)",
                    per_job, per_job)
    return config.workers or max(1, groups)


def run(args: argparse.Namespace) -> int:
    """Start the workers, then serve HTTP until interrupted; stop the workers on the way out."""
    config = from_args(args)
    configure_logging(config.log_level, config.log_format)
    try:
        keys = KeyRing.load(config.api_keys_file, config.api_keys)
    except KeyConfigError as exc:
        raise CommandError(str(exc)) from None
    notice = check_exposure(config, keys)
    if notice:
        log.warning("%s", notice)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    # An API-only node probes nothing: its GPUs (if any) are not used; workers on other machines
    # refuse what their GPU cannot fit, with the same message.
    config, gpu_ids = (config, []) if config.api_only else plan_workers(config)
    try:
        results = open_results(config.results, config.data_dir, config.s3_endpoint_url)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    count = 0 if config.api_only else worker_count(config, gpu_ids)
    worker_cpus = pin_api(config.api_cpus, count)  # before any thread starts: they inherit it
    store = JobStore(config.store_url)
    janitor = Janitor.from_config(config, store, results)
    supervisor = Supervisor(worker_command(config), count, gpu_ids, on_exit=janitor.worker_died,
                            gpus_per_worker=config.gpus_per_job, watchdog_seconds=config.watchdog_seconds,
                            nice=config.worker_nice, cpus=worker_cpus)
    supervisor.start()
    app = create_app(config, store=store, keys=keys, janitor=janitor)
    log.info("serving on http://%s:%d/api with %d worker(s); store %s", config.host, config.port,
             len(supervisor.slots), _redact(config.store_url))
    # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default action that
    # would kill this process before the workers are stopped, so make it a no-op here.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    try:
        # JSON logs: uvicorn's loggers propagate to the root handler instead of using their own format.
        extra = {"log_config": None} if config.log_format == "json" else {}
        uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level,
                    timeout_graceful_shutdown=5, **extra)
    finally:
        supervisor.stop()
        store.close()
    return 0


def pin_api(api_cpus: str, workers: int) -> set[int] | None:
    """`--api-cpus`: move this process (the API) onto those CPUs; the workers' CPUs (None: no pinning)."""
    if not api_cpus:
        return None
    try:
        api = parse_cpu_list(api_cpus)
        rest = workers_cpus(api, os.sched_getaffinity(0), workers)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    os.sched_setaffinity(0, api)
    log.info("API pinned to CPU %s; workers on CPU %s", format_cpu_list(api), format_cpu_list(rest) or "-")
    return rest


def _redact(url: str) -> str:
    """A store URL without its password, for logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<store>"
