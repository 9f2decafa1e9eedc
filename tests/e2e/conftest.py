"""End-to-end fixtures: live `ltx-server serve` processes (see serverkit.py) and the image host."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from image_host_fixture import image_host  # noqa: F401  (a fixture)
from serverkit import KEY_A, KEY_B, LiveServer

# ---- live servers ---------------------------------------------------------------------------


def _factory(tmp_path_factory, servers: list[LiveServer]):
    def make(args: list[str] | None = None, env: dict[str, str] | None = None, start: bool = True,
             data_dir: Path | None = None) -> LiveServer:
        server = LiveServer(data_dir or tmp_path_factory.mktemp("ltx-data"), list(args or []), dict(env or {}))
        servers.append(server)
        return server.start() if start else server

    return make


@pytest.fixture(scope="module")
def live_server_factory(tmp_path_factory):
    """Start servers for one module; all are stopped at the module's end."""
    servers: list[LiveServer] = []
    yield _factory(tmp_path_factory, servers)
    for server in servers:
        server.cleanup()


@pytest.fixture(scope="session")
def keyed_live(tmp_path_factory):
    """The shared server of the API and image tests: two API keys, private image URLs allowed (the
    test image host is on 127.0.0.1), a 1 MiB / 1 s fetch limit, 1 s keep-alives, 5 s leases."""
    servers: list[LiveServer] = []
    make = _factory(tmp_path_factory, servers)
    # The per-key limits (on by default with keys) are off here: these tests submit in bursts; the limits
    # have their own tests (tests/integration/server/test_submit_limits.py).
    yield make(["--api-keys", f"alice:{KEY_A},bob:{KEY_B}", "--keepalive-seconds", "1", "--lease-seconds", "5",
                "--allow-private-urls", "--fetch-max-bytes", str(2**20), "--fetch-timeout", "1",
                "--rate-limit", "0", "--max-active-jobs", "0"])
    for server in servers:
        server.cleanup()


@pytest.fixture(scope="session")
def have_jq() -> bool:
    """The documented cURL flow pipes through awk and jq."""
    return all(shutil.which(tool) for tool in ("curl", "awk", "jq"))
