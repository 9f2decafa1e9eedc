"""Unit tests: the URL signer, the image fetcher's checks, API keys and configuration."""

from __future__ import annotations

import argparse

import pytest

import server.core.image_fetch as image_fetch
from server.core.auth import KeyConfigError, KeyRing, is_loopback
from server.core.config import OPTIONS, add_options, from_args
from server.core.image_fetch import ImageFetchError, fetch_image_bytes, is_public_address
from server.core.signing import URLSigner
from serverkit import data_uri, png_bytes

# ---- signing --------------------------------------------------------------------------------


def test_signed_url_round_trip_expiry_and_tampering():
    signer = URLSigner(b"0123456789abcdef0123", ttl_seconds=60)
    query = dict(part.split("=") for part in signer.query("gen-1", now=1000).split("&"))
    assert query["expires"] == "1060"
    assert signer.verify("gen-1", query["expires"], query["signature"], now=1059)
    assert not signer.verify("gen-1", query["expires"], query["signature"], now=1061)  # expired
    assert not signer.verify("gen-2", query["expires"], query["signature"], now=1000)  # other file
    assert not signer.verify("gen-1", "9999999999", query["signature"], now=1000)  # extended expiry
    assert not signer.verify("gen-1", "soon", query["signature"], now=1000)
    other = URLSigner(b"another-secret-of-16+", ttl_seconds=60)
    assert not other.verify("gen-1", query["expires"], query["signature"], now=1000)


def test_signing_key_persists_in_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("LTX_URL_SECRET", raising=False)
    first = URLSigner.from_data_dir(tmp_path, 60)
    second = URLSigner.from_data_dir(tmp_path, 60)
    assert first.signature("g", 1) == second.signature("g", 1)
    assert (tmp_path / "url-signing.key").stat().st_mode & 0o777 == 0o600


# ---- address checks -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1", "255.255.255.255"],
)
def test_non_public_addresses_are_refused(address):
    assert not is_public_address(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert is_public_address(address)


def test_private_host_refused_after_dns_resolution(image_host):
    # "localhost" is a name: the refusal comes from what it resolves to.
    url = image_host.base.replace("127.0.0.1", "localhost") + "/ok.png"
    with pytest.raises(ImageFetchError, match="resolves to .*private, loopback or link-local"):
        fetch_image_bytes(url)
    with pytest.raises(ImageFetchError, match="resolves to 127.0.0.1"):
        fetch_image_bytes(image_host.base + "/ok.png")
    assert fetch_image_bytes(url, allow_private=True) == png_bytes()


def test_every_redirect_hop_is_checked(image_host, monkeypatch):
    # Pretend 127.0.0.1 is public and 127.0.0.2 is not: a redirect to 127.0.0.2 must be refused.
    monkeypatch.setattr(image_fetch, "is_public_address", lambda address: address == "127.0.0.1")
    target = image_host.base.replace("127.0.0.1", "127.0.0.2") + "/ok.png"
    url = image_host.redirect("/to-private", target)
    with pytest.raises(ImageFetchError, match="127.0.0.2"):
        fetch_image_bytes(url)
    assert fetch_image_bytes(image_host.base + "/hop1") == png_bytes()  # allowed hops are followed


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the bomb is the point
def test_fetch_limits(image_host):
    fetch = lambda path, **kw: fetch_image_bytes(image_host.base + path, allow_private=True, **kw)  # noqa: E731
    with pytest.raises(ImageFetchError, match="larger than the 1 MiB limit"):
        fetch("/big.png", max_bytes=2**20)
    with pytest.raises(ImageFetchError, match="megapixel limit"):
        fetch("/bomb.png")
    with pytest.raises(ImageFetchError, match="could not be decoded"):
        fetch("/text.png")
    with pytest.raises(ImageFetchError, match="GIF; use PNG, JPEG or WebP"):
        fetch("/anim.gif")
    with pytest.raises(ImageFetchError, match="within 1 s"):
        fetch("/slow.png", timeout=1)
    with pytest.raises(ImageFetchError, match="HTTP 404"):
        fetch("/missing.png")
    with pytest.raises(ImageFetchError, match="redirected more than 5 times"):
        fetch("/loop0")
    assert fetch("/hop1", max_redirects=2) == png_bytes()
    with pytest.raises(ImageFetchError, match="more than 1 times"):
        fetch("/hop1", max_redirects=1)


def test_data_uris_and_schemes():
    assert fetch_image_bytes(data_uri()) == png_bytes()
    with pytest.raises(ImageFetchError, match="not valid base64|could not be decoded"):
        fetch_image_bytes("data:image/png;base64,@@@@")
    with pytest.raises(ImageFetchError, match="no ','"):
        fetch_image_bytes("data:image/png;base64")
    with pytest.raises(ImageFetchError, match="larger than"):
        fetch_image_bytes(data_uri(png_bytes() + b"\0" * 4096), max_bytes=1024)
    for uri in ("file:///etc/passwd", "ftp://example.com/a.png", "gopher://x"):
        with pytest.raises(ImageFetchError, match="http\\(s\\) URL or a data: URI"):
            fetch_image_bytes(uri, allow_private=True)


# ---- keys and configuration -------------------------------------------------------------------


def test_key_ring(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nalice:alice-secret-1\nbare-secret-key-2\n\n")
    ring = KeyRing.load(str(keys_file), "carol:carol-secret-3")
    assert ring.owner_for("Bearer alice-secret-1") == "alice"
    assert ring.owner_for("bearer carol-secret-3") == "carol"
    assert ring.owner_for("Bearer bare-secret-key-2").startswith("key-")
    assert ring.owner_for("Bearer wrong") is None and ring.owner_for(None) is None
    assert ring.owner_for("Basic alice-secret-1") is None
    with pytest.raises(KeyConfigError, match="shorter than 8"):
        KeyRing.load("", "short")
    with pytest.raises(KeyConfigError, match="cannot read"):
        KeyRing.load(str(tmp_path / "missing"))
    assert not KeyRing.load().enabled


def test_loopback_detection():
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "localhost", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "10.0.0.1", "::", "example.com", None, ""]))


def test_every_option_has_a_flag_and_an_env_var():
    parser = argparse.ArgumentParser()
    add_options(parser)
    env = {option.env: "" for option in OPTIONS}
    env.update({"LTX_PORT": "9001", "LTX_INSECURE": "true", "LTX_WEIGHTS": "tiny"})
    config = from_args(parser.parse_args(["--port", "9002"]), env)
    assert config.port == 9002 and config.insecure and config.weights == "tiny"  # flag beats env
    assert all(option.env.startswith("LTX_") and option.flag.startswith("--") for option in OPTIONS)
    assert config.store_url.startswith("sqlite:///") and config.store_url.endswith("jobs.sqlite3")


# ---- in-process app checks (no workers needed) -------------------------------------------------


def _app_config(tmp_path, **overrides):
    from server.core.config import ServerConfig

    return ServerConfig(data_dir=tmp_path, **overrides)


def test_without_keys_non_loopback_clients_are_refused(tmp_path):
    from fastapi.testclient import TestClient

    from server.api.main import create_app

    app = create_app(_app_config(tmp_path))
    with TestClient(app) as client:  # the test client's address is "testclient", not loopback
        response = client.get("/api/ai/queue")
        assert response.status_code == 401
        assert "loopback" in response.json()["error"]["detail"]
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503  # no worker has loaded a model
    insecure = create_app(_app_config(tmp_path, insecure=True))
    with TestClient(insecure) as client:
        assert client.get("/api/ai/queue").json() == {"count": 0, "generations": []}


def test_retention_deletes_files_and_says_so_in_the_record(tmp_path):
    from server.api.schemas import generation_row
    from server.api.services.janitor import apply_retention
    from server.queue import JobStore, NewJob

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    (job,) = store.enqueue([NewJob(owner="o", model="m", params={"prompt": "p", "input_image": "x"},
                                   input_sha256="s")], b"img", now=0.0)
    store.claim_next("w", 30, now=1.0)
    result = tmp_path / "results" / "o" / f"{job.id}.mp4"
    result.parent.mkdir(parents=True)
    result.write_bytes(b"mp4")
    store.complete(job.id, "w", f"results/o/{job.id}.mp4", {}, now=2.0)
    assert apply_retention(store, tmp_path, retention_hours=1, now=2.0 + 1800) == []  # not yet
    assert apply_retention(store, tmp_path, retention_hours=1, now=2.0 + 3601) == [job.id]
    assert not result.exists()
    row = generation_row(store.get(job.id), result_url=None)
    assert row["status"] == "succeeded" and row["result_url"] is None
    assert "retention policy" in row["error_message"] and row["result_deleted_at"]


def test_public_url_and_result_download_in_process(tmp_path):
    from fastapi.testclient import TestClient

    from server.api.main import create_app
    from server.queue import JobStore, NewJob

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    (job,) = store.enqueue([NewJob(owner="local", model="m", params={"prompt": "p", "input_image": "x"},
                                   input_sha256="s")], b"img")
    store.claim_next("w", 30)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "v.mp4").write_bytes(b"\0\0\0\x18ftypisom" + b"x" * 100)
    store.complete(job.id, "w", "results/v.mp4", {})
    app = create_app(_app_config(tmp_path, insecure=True, public_url="https://video.example.com/"), store=store)
    with TestClient(app) as client:
        url = client.get(f"/api/ai/queue/{job.id}").json()["result_url"]
        assert url.startswith(f"https://video.example.com/api/results/{job.id}.mp4?expires=")
        path = url.removeprefix("https://video.example.com")
        full = client.get(path)
        assert full.status_code == 200 and full.headers["content-type"] == "video/mp4" and len(full.content) == 112
        assert client.get(path, headers={"Range": "bytes=4-7"}).content == b"ftyp"
        head = client.head(path)
        assert head.status_code == 200 and head.headers["content-length"] == "112"
        assert client.get(path.replace("signature=", "signature=f")).status_code == 403


def test_oversized_bodies_are_refused_before_parsing(tmp_path):
    from fastapi.testclient import TestClient

    from server.api.main import create_app

    app = create_app(_app_config(tmp_path, insecure=True, fetch_max_bytes=1000))
    with TestClient(app) as client:
        response = client.post("/api/ai/queue", content=b"{" + b" " * (2 * 2**20) + b"}")
        assert response.status_code == 400 and "larger than 1 MiB" in response.json()["error"]["detail"]


def test_the_api_freezes_its_startup_heap_and_reads_status_in_the_loop(tmp_path):
    """Once started, the app's objects are out of the collector's full passes, and a status read on a
    SQLite store answers from the event loop (no thread hop): the same answer the thread path gives."""
    import gc

    from fastapi.testclient import TestClient

    from server.api.main import create_app
    from server.queue import NewJob

    gc.unfreeze()
    app = create_app(_app_config(tmp_path, insecure=True))
    store = app.state.store
    (job,) = store.enqueue([NewJob("local", "m", {"prompt": "p", "seed": 1}, "sha")], b"img")
    try:
        with TestClient(app) as client:
            assert gc.get_freeze_count() > 0
            fast = client.get(f"/api/ai/queue/{job.id}")
            store.quick_reads = None  # as on PostgreSQL: the read goes through the thread pool
            slow = client.get(f"/api/ai/queue/{job.id}")
            assert fast.status_code == slow.status_code == 200 and fast.json() == slow.json()
            assert client.get("/api/ai/queue/unknown").json()["error"]["type"] == "resource_not_found"
    finally:
        gc.unfreeze()
