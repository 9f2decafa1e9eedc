"""The playground's static files ship in the package: pyproject's package-data covers every one."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "server" / "api" / "static"


def test_package_data_covers_every_static_file():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["server.api"]
    files = [path.relative_to(STATIC.parent).as_posix() for path in STATIC.rglob("*") if path.is_file()]
    assert files, "no static files"
    uncovered = [name for name in files if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]
    assert uncovered == []
    # fnmatch's * crosses "/", setuptools' does not: keep the folder flat, or add a pattern per folder.
    assert all("/" not in name.removeprefix("static/") for name in files)
