"""Integration fixtures: the job store on SQLite and on the machine's PostgreSQL, the image host."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from image_host_fixture import image_host  # noqa: F401  (a fixture)

PG_URL = os.environ.get("LTX_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1/test")


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
