"""One log format for the API, the supervisor and the workers (text, or JSON lines with `--log-format json`)."""

from __future__ import annotations

import logging
import sys

from server.core.job_logs import JobIdFilter, JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def configure_logging(level: str, log_format: str = "text") -> None:
    """Configure the root logger: `text` (human) or `json` (one object per line, generation id on job lines)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(JobIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
