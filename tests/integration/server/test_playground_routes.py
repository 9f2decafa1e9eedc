"""The playground's HTTP side on the app in-process: the page and its files with their security
headers, and `/api/playground/output-size` (the size `auto` picks, from the pipeline's arithmetic).
The page itself runs in a real browser in tests/e2e/test_playground.py."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.api.main import create_app
from server.core.config import ServerConfig
from serverkit import KEY_A, png_bytes

STATIC = Path(__file__).resolve().parents[3] / "server" / "api" / "static"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("api"), api_keys=f"alice:{KEY_A}",
                          public_url="https://video.example.com/")
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        yield client


def policy(response) -> dict[str, str]:
    """The Content-Security-Policy header as directive -> sources."""
    header = response.headers["content-security-policy"]
    return dict(part.strip().split(" ", 1) for part in header.split(";"))


def test_the_page_is_served_at_the_root_without_a_key_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>LTX-2.3 playground" in page.text
    csp = policy(page)
    assert csp["default-src"] == "'self'" and csp["script-src"] == "'self'" and csp["style-src"] == "'self'"
    assert csp["connect-src"] == "'self'" and csp["object-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert "unsafe-eval" not in page.headers["content-security-policy"]
    # Result URLs are built on --public-url, so the videos may come from that origin (and only it).
    assert csp["media-src"] == "'self' https://video.example.com blob:"
    assert page.headers["x-content-type-options"] == "nosniff" and page.headers["referrer-policy"] == "no-referrer"


def test_the_page_has_no_inline_code_and_names_only_its_own_files(client):
    html = client.get("/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline <script>"
    assert "<style" not in html and " style=" not in html and not re.search(r"\son[a-z]+=", html)
    assets = re.findall(r'(?:src|href)="(/playground/[^"]+)"', html)
    assert sorted(assets) == ["/playground/playground.css", "/playground/playground.js"]
    for asset in assets:
        got = client.get(asset)
        assert got.status_code == 200 and got.headers["content-security-policy"] == \
            client.get("/").headers["content-security-policy"]
    # The modules the script imports are there too, as JavaScript.
    imported = re.findall(r'from "\./([a-z-]+\.js)"', (STATIC / "playground.js").read_text())
    assert sorted(imported) == ["schema-form.js", "snippets.js", "sse.js"]
    for name in imported:
        got = client.get(f"/playground/{name}")
        assert got.status_code == 200 and "javascript" in got.headers["content-type"]
    assert client.get("/playground/missing.js").status_code == 404


def test_no_file_of_the_page_reaches_for_another_origin():
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"""(?:src|href|url\()\s*=?\s*["']?(?:https?:)?//""", text), path.name
        assert "@import" not in text and "fetch(\"http" not in text, path.name


def test_output_size_follows_the_pipeline(client):
    key = {"Authorization": f"Bearer {KEY_A}"}

    def size(**query) -> dict:
        response = client.get("/api/playground/output-size", params=query, headers=key)
        assert response.status_code == 200, response.text
        return response.json()

    # auto keeps the aspect ratio at about 1024x576's area, in multiples of 64.
    assert size(width=1920, height=1080) == {"width": 1024, "height": 576, "resolution": "auto"}
    assert size(width=1080, height=1920)["width"] == 576
    assert size(width=1000, height=1000) == {"width": 768, "height": 768, "resolution": "auto"}
    assert size(width=160, height=96, resolution="128x128") == {"width": 128, "height": 128, "resolution": "128x128"}
    assert size(width=5, height=5, resolution="square") == {"width": 512, "height": 512, "resolution": "square"}


def test_output_size_refuses_bad_input_with_the_envelope(client):
    key = {"Authorization": f"Bearer {KEY_A}"}
    bad = client.get("/api/playground/output-size", params={"width": 10, "height": 10, "resolution": "100x100"},
                     headers=key)
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_params"
    assert "resolution" in bad.json()["error"]["detail"] and "multiples of 64" in bad.json()["error"]["detail"]
    zero = client.get("/api/playground/output-size", params={"width": 0, "height": 10}, headers=key)
    assert zero.status_code == 400 and "width and height" in zero.json()["error"]["detail"]
    anonymous = client.get("/api/playground/output-size", params={"width": 10, "height": 10})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "unauthenticated"


def test_start_image_url_is_fetched_as_a_job_would_be(client, image_host, tmp_path):
    key = {"Authorization": f"Bearer {KEY_A}"}
    # This app does not allow private addresses: the local image host is refused, as for a job.
    refused = client.post("/api/playground/start-image", json={"input_image": image_host.base + "/ok.png"},
                          headers=key)
    assert refused.status_code == 400 and "private" in refused.json()["error"]["detail"].lower()
    data_uri = client.post("/api/playground/start-image", json={"input_image": "data:image/png;base64,AAAA"},
                           headers=key)
    assert data_uri.status_code == 400 and "http(s) URL" in data_uri.json()["error"]["detail"]
    assert client.post("/api/playground/start-image", json={"input_image": image_host.base + "/ok.png"}
                       ).status_code == 401

    config = ServerConfig(data_dir=tmp_path, allow_private_urls=True)
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as local:
        url = image_host.add("/wide.png", png_bytes(800, 400))
        described = local.post("/api/playground/start-image", json={"input_image": url}).json()
        assert (described["width"], described["height"]) == (800, 400)
        assert described["output"] == local.get("/api/playground/output-size",
                                                params={"width": 800, "height": 400}).json()
        assert described["preview"].startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(described["preview"].split(",", 1)[1]))) as preview:
            assert preview.size == (320, 160)  # a small preview, aspect kept
        square = local.post("/api/playground/start-image", json={"input_image": url, "resolution": "square"})
        assert square.json()["output"] == {"width": 512, "height": 512, "resolution": "square"}
        missing = local.post("/api/playground/start-image", json={"input_image": image_host.base + "/missing.png"})
        assert missing.status_code == 400 and "HTTP 404" in missing.json()["error"]["detail"]
        bad = local.post("/api/playground/start-image", json={"input_image": url, "resolution": "7x7"})
        assert bad.status_code == 400 and "resolution" in bad.json()["error"]["detail"]
