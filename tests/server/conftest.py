"""Fixtures for the server tests: stores (SQLite and PostgreSQL), a local image host and live
`ltx-server serve` processes (see serverkit.py)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import uuid
from pathlib import Path

import pytest
from PIL import Image

from serverkit import KEY_A, KEY_B, ImageHost, LiveServer, bomb_png, png_bytes

PG_URL = os.environ.get("LTX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1/test")


@pytest.fixture(scope="session")
def image_host():
    host = ImageHost()
    host.add("/ok.png", png_bytes())
    host.add("/big.png", png_bytes() + b"\0" * (2 * 2**20))  # over a 1 MiB cap
    host.add("/bomb.png", bomb_png())
    host.add("/text.png", b"this is not an image at all", headers={"Content-Type": "text/plain"})
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "GIF")
    host.add("/anim.gif", buffer.getvalue(), headers={"Content-Type": "image/gif"})
    host.add("/slow.png", png_bytes())
    host.slow_paths.add("/slow.png")
    host.add("/missing.png", b"gone", status=404)
    host.redirect("/hop1", "/hop2")
    host.redirect("/hop2", "/ok.png")
    for i in range(8):
        host.redirect(f"/loop{i}", f"/loop{i + 1}")
    yield host
    host.close()


# ---- stores ---------------------------------------------------------------------------------


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
        import psycopg  # noqa: F401
    except (OSError, ImportError):
        return False
    return True


def _unavailable(reason: str) -> None:
    """Skip where no PostgreSQL runs; in CI (CI=true) the PostgreSQL tests must run, so fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run starts PostgreSQL; the store tests must run on it)")
    pytest.skip(reason)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The same contract tests on SQLite and (when reachable) PostgreSQL, each in a fresh schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        return
    if not _pg_reachable():
        _unavailable("PostgreSQL at 127.0.0.1:5432 is not reachable")
    from sqlalchemy import create_engine, text

    schema = f"ltx_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as exc:  # noqa: BLE001
        _unavailable(f"PostgreSQL not usable: {exc}")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


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
    yield make(["--api-keys", f"alice:{KEY_A},bob:{KEY_B}", "--keepalive-seconds", "1", "--lease-seconds", "5",
                "--allow-private-urls", "--fetch-max-bytes", str(2**20), "--fetch-timeout", "1"])
    for server in servers:
        server.cleanup()


@pytest.fixture(scope="session")
def have_jq() -> bool:
    """The documented cURL flow pipes through awk and jq."""
    return all(shutil.which(tool) for tool in ("curl", "awk", "jq"))
