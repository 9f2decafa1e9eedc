"""Property-based requests from /openapi.json (schemathesis; positive and negative cases for every
operation, with an API key): at least 1,000 requests and not one 5xx. bench/hostile_input.py runs
10,000+."""

from __future__ import annotations

import pytest

from openapi_fuzz import fuzz

pytestmark = pytest.mark.slow


def test_generated_requests_never_get_a_5xx(tmp_path):
    report = fuzz(tmp_path, examples_per_mode=50)
    print(f"{report.requests} requests over {report.operations} operations: {dict(report.by_status)}")
    assert report.requests >= 1000 and report.operations >= 18
    assert report.server_errors == []
    assert report.by_status[400] > 100 and report.by_status[200] > 50  # both refusals and real answers
