"""Server settings: one dataclass, filled from `ltx-server serve` flags and `LTX_*` variables.

Each option has exactly one flag and one environment variable (`OPTIONS` below drives both the
argument parser and the README's configuration table); a flag wins over its variable, the
variable over the default.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.core.paths import DataPaths

TRUE_WORDS = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Option:
    """One setting: its flag, its variable, its type and default, and a sentence of help."""

    name: str
    flag: str
    env: str
    default: Any
    help: str
    kind: type = str
    is_flag: bool = False  # a boolean switch

    def parse(self, raw: str) -> Any:
        if self.is_flag:
            return raw.strip().lower() in TRUE_WORDS
        return self.kind(raw)


OPTIONS: tuple[Option, ...] = (
    Option("host", "--host", "LTX_HOST", "127.0.0.1", "Address to listen on."),
    Option("port", "--port", "LTX_PORT", 8000, "Port to listen on.", int),
    Option("data_dir", "--data-dir", "LTX_DATA_DIR", "data",
           "Directory for the job database, results, secrets and the tiny model's cache."),
    Option("weights", "--weights", "LTX_WEIGHTS", "auto",
           "auto (real weights on a GPU if present, else the tiny model), tiny, or a weights directory."),
    Option("store", "--store", "LTX_STORE", "",
           "SQLAlchemy URL of the job store (default: SQLite at <data-dir>/jobs.sqlite3; "
           "postgresql+psycopg://... also works)."),
    Option("workers", "--workers", "LTX_WORKERS", 0,
           "Worker processes to start (default: one per visible GPU, one CPU worker without a GPU; "
           "0 = that default).", int),
    Option("public_url", "--public-url", "LTX_PUBLIC_URL", "",
           "Base URL clients reach this server at, used in result URLs (default: from the request)."),
    Option("api_keys_file", "--api-keys-file", "LTX_API_KEYS_FILE", "",
           "File with one API key per line (optionally `name:key`); `#` comments allowed."),
    Option("api_keys", "--api-keys", "LTX_API_KEYS", "",
           "Comma-separated API keys (optionally `name:key`). Prefer the file for secrets."),
    Option("allow_private_urls", "--allow-private-urls", "LTX_ALLOW_PRIVATE_URLS", False,
           "Let input_image URLs point at private, loopback and link-local addresses.", is_flag=True),
    Option("insecure", "--insecure", "LTX_INSECURE", False,
           "Allow listening on a non-loopback address with no API keys configured.", is_flag=True),
    Option("result_url_ttl", "--result-url-ttl", "LTX_RESULT_URL_TTL", 86400.0,
           "Seconds a signed result URL stays valid.", float),
    Option("retention_hours", "--retention-hours", "LTX_RETENTION_HOURS", 0.0,
           "Delete result files this many hours after completion (records stay); 0 keeps them.", float),
    Option("lease_seconds", "--lease-seconds", "LTX_LEASE_SECONDS", 60.0,
           "A processing job whose worker sent no heartbeat for this long is retried (once).", float),
    Option("events_grace_seconds", "--events-grace-seconds", "LTX_EVENTS_GRACE_SECONDS", 120.0,
           "A new /api/events subscriber first receives its completions from this many seconds back.",
           float),
    Option("keepalive_seconds", "--keepalive-seconds", "LTX_KEEPALIVE_SECONDS", 15.0,
           "Seconds between `: keep-alive` comments on an idle event stream.", float),
    Option("fetch_timeout", "--fetch-timeout", "LTX_FETCH_TIMEOUT", 20.0,
           "Seconds allowed to download an input_image.", float),
    Option("fetch_max_bytes", "--fetch-max-bytes", "LTX_FETCH_MAX_BYTES", 25 * 2**20,
           "Largest input_image accepted, in bytes.", int),
    Option("plan", "--plan", "LTX_PLAN", "auto",
           "GPU memory plan: auto (by the card's memory), resident, encoder-offload, fp8 or offload."),
    Option("compile", "--compile", "LTX_COMPILE", False,
           "Compile the transformer's repeated blocks once per worker (slower first job, faster after).",
           is_flag=True),
    Option("engine", "--engine", "LTX_ENGINE", "",
           "Engine factory MODULE:FUNCTION, called with the EngineSpec instead of pipeline.engine.Engine.load "
           "(an extension point: wrap or replace the model; it must be importable by the workers)."),
    Option("log_level", "--log-level", "LTX_LOG_LEVEL", "info", "debug, info, warning or error."),
    Option("log_format", "--log-format", "LTX_LOG_FORMAT", "text",
           "text, or json (one object per line; lines written while a job runs carry its generation_id)."),
    Option("results", "--results", "LTX_RESULTS", "local",
           "Where results are kept: local (<data-dir>/results; a shared mount serves a fleet) or "
           "s3://BUCKET[/PREFIX] (any S3-compatible store; credentials from the AWS_* variables)."),
    Option("s3_endpoint_url", "--s3-endpoint-url", "LTX_S3_ENDPOINT_URL", "",
           "Endpoint of a non-AWS S3-compatible store for --results s3://... (MinIO, Ceph, R2)."),
    Option("api_only", "--api-only", "LTX_API_ONLY", False,
           "Serve the API (and the janitor) without starting workers: in a fleet, workers run elsewhere "
           "(`ltx-server worker`) against the same --store.", is_flag=True),
    Option("gpus_per_job", "--gpus-per-job", "LTX_GPUS_PER_JOB", 1,
           "Split each job over this many GPUs (context parallelism): one worker per group of N GPUs. On a "
           "machine without a GPU, N > 1 runs N CPU ranks over gloo: a testing mode, not faster.", int),
    Option("lora_dir", "--lora-dir", "LTX_LORA_DIR", "",
           "Directory of LoRA adapters (.safetensors) that requests may name in `loras`; GET /api/ai/loras "
           "lists it. Empty: no LoRAs."),
    # Limits (issue 11). -1 = auto: off on a server without API keys, the stated default with keys.
    Option("rate_limit", "--rate-limit", "LTX_RATE_LIMIT", -1.0,
           "Jobs each API key may submit per minute (token bucket; 429 with Retry-After past it); "
           "-1 = auto (off without API keys, 30 with keys), 0 = off.", float),
    Option("rate_burst", "--rate-burst", "LTX_RATE_BURST", 10.0,
           "Jobs an API key may submit at once before --rate-limit applies (the bucket's size).", float),
    Option("max_active_jobs", "--max-active-jobs", "LTX_MAX_ACTIVE_JOBS", -1,
           "Queued + processing jobs allowed per API key (429 past it); -1 = auto (off without API keys, "
           "50 with keys), 0 = off.", int),
    Option("job_timeout", "--job-timeout", "LTX_JOB_TIMEOUT", 0.0,
           "Wall-clock seconds a job may run before it is stopped (within one step) and failed; 0 = no limit.",
           float),
    Option("watchdog_seconds", "--watchdog-seconds", "LTX_WATCHDOG_SECONDS", 600.0,
           "A worker that reports no progress for this long (hung) is killed and restarted; its job is "
           "retried once. 0 = off.", float),
    Option("worker_nice", "--worker-nice", "LTX_WORKER_NICE", 10,
           "CPU scheduling niceness added to worker processes (0-19), so that their CPU work never delays "
           "the API's answers; the GPU does the generating. 0 = the API's priority.", int),
    Option("api_cpus", "--api-cpus", "LTX_API_CPUS", "",
           "CPUs the API process runs on (e.g. 0 or 0-1); the workers then run on the other CPUs, so their "
           "CPU work never takes the API's core (see \"Latency\"). Empty = no pinning.", str),
)


@dataclass(frozen=True)
class ServerConfig:
    """Everything `serve`, the app, the supervisor and the workers need to know."""

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=lambda: Path("data").resolve())
    weights: str = "auto"
    store: str = ""
    workers: int = 0
    public_url: str = ""
    api_keys_file: str = ""
    api_keys: str = ""
    allow_private_urls: bool = False
    insecure: bool = False
    result_url_ttl: float = 86400.0
    retention_hours: float = 0.0
    lease_seconds: float = 60.0
    events_grace_seconds: float = 120.0
    keepalive_seconds: float = 15.0
    fetch_timeout: float = 20.0
    fetch_max_bytes: int = 25 * 2**20
    plan: str = "auto"
    compile: bool = False
    engine: str = ""
    log_level: str = "info"
    log_format: str = "text"
    results: str = "local"
    s3_endpoint_url: str = ""
    api_only: bool = False
    lora_dir: str = ""
    rate_limit: float = -1.0
    rate_burst: float = 10.0
    max_active_jobs: int = -1
    job_timeout: float = 0.0
    watchdog_seconds: float = 600.0
    worker_nice: int = 10
    api_cpus: str = ""
    weights_notice: str | None = None  # set by `serve` when it knows the weights before a worker reports
    # (memory plan, GPU bytes) of the smallest GPU the workers run on, set by `serve` for real
    # weights: requests that cannot fit are refused with 400 before they are queued.
    gpu_capacity: tuple[str, int] | tuple[str, int, int] | None = None
    gpus_per_job: int = 1

    @property
    def paths(self) -> DataPaths:
        """The data directory's layout."""
        return DataPaths(self.data_dir)

    @property
    def lora_path(self) -> Path | None:
        """The LoRA directory, or None when LoRAs are off."""
        return Path(self.lora_dir).expanduser().resolve() if self.lora_dir else None

    @property
    def store_url(self) -> str:
        """The job store URL (SQLite under the data directory unless `--store` says otherwise)."""
        return self.store or self.paths.default_store_url


def add_options(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Add the flags for `OPTIONS` (or the named subset); defaults are resolved in `from_args`."""
    for option in OPTIONS:
        if names is not None and option.name not in names:
            continue
        help_text = f"{option.help} [env {option.env}; default {option.default!r}]"
        if option.is_flag:
            parser.add_argument(option.flag, dest=option.name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(option.flag, dest=option.name, type=option.kind, default=None, help=help_text)


def from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> ServerConfig:
    """Flags, then `LTX_*` variables, then defaults."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    for option in OPTIONS:
        given = getattr(args, option.name, None)
        if given is not None:
            values[option.name] = given
        elif option.env in environ and environ[option.env] != "":
            values[option.name] = option.parse(environ[option.env])
        else:
            values[option.name] = option.default
    values["data_dir"] = Path(values["data_dir"]).expanduser().resolve()
    return ServerConfig(**values)

