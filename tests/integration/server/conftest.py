"""The in-process app most API tests here share: two API keys, an embedded SQLite store, a loopback
client address (as the loopback rule expects). A module that needs another configuration defines
its own `client`, which takes precedence."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.api.main import create_app
from server.core.config import ServerConfig
from serverkit import KEY_A, KEY_B


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("api"), api_keys=f"alice:{KEY_A},bob:{KEY_B}")
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        yield client
