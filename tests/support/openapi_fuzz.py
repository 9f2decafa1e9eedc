"""Property-based requests generated from the server's own /openapi.json (schemathesis), sent to the
app in-process with an API key; shared by tests/integration/server/test_openapi_fuzz.py (about
1,000 requests) and bench/hostile_input.py (10,000 and more).

Both schema-valid (positive) and schema-violating (negative) requests are generated for every
operation. Excluded: `GET /api/events`, an endless stream by design (its refusals are in the
access matrix). `/readyz` answering 503 (no worker in-process) is its documented answer, not
an error. Start-image URLs are fetched for real with a short timeout, so generated hosts
fail fast.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from server.api.main import create_app
from server.core.config import ServerConfig
from serverkit import KEY_A, KEY_B

EXCLUDED = {("GET", "/api/events")}


@dataclass
class FuzzReport:
    requests: int = 0
    by_status: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # "METHOD path -> status: body" of each 5xx
    operations: int = 0


def fuzz(data_dir: Path, examples_per_mode: int, seed: int = 0) -> FuzzReport:
    """`examples_per_mode` positive and as many negative cases per operation; every 5xx recorded."""
    config = ServerConfig(data_dir=data_dir, api_keys=f"alice:{KEY_A},bob:{KEY_B}", fetch_timeout=0.5,
                          fetch_max_bytes=2**20)
    app = create_app(config)
    report = FuzzReport()
    headers = {"Authorization": f"Bearer {KEY_A}"}
    with TestClient(app, client=("127.0.0.1", 50000), raise_server_exceptions=False) as client:
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        for result in schema.get_all_operations():
            operation = result.ok()
            if (operation.method.upper(), operation.path) in EXCLUDED:
                continue
            report.operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _run(client, operation, mode, headers, examples_per_mode, seed, report)
    return report


def _run(client: TestClient, operation, mode, headers, examples: int, seed: int, report: FuzzReport) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed == 0,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case) -> None:
        kwargs = case.as_transport_kwargs(base_url="")
        response = client.request(kwargs["method"], kwargs["url"], headers={**kwargs.get("headers", {}), **headers},
                                  params=kwargs.get("params"), content=_content(kwargs), cookies=None)
        report.requests += 1
        report.by_status[response.status_code] += 1
        if response.status_code >= 500 and not (case.path == "/readyz" and response.status_code == 503):
            report.server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                        f"{response.text[:300]} (curl: {case.as_curl_command()[:300]})")

    try:
        send()
    except Unsatisfiable:  # nothing to violate (an operation without parameters or body): no negative cases
        if mode is GenerationMode.POSITIVE:
            raise


def _content(kwargs: dict) -> bytes | None:
    if "json" in kwargs:
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data") or kwargs.get("content")
    if isinstance(data, str):
        return data.encode()
    return data
