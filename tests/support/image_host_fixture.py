"""The local image host fixture (a real HTTP server on 127.0.0.1 serving good and hostile images).

Shared by the integration and e2e tiers: each conftest imports `image_host` from here.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from serverkit import ImageHost, bomb_png, png_bytes


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
