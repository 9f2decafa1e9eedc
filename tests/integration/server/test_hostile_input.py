"""Hostile input on the app in-process: a table of bad requests (each a 4xx envelope with a useful
sentence, the server alive after all of them), start images that must work, the SSRF refusals,
and the access matrix (every endpoint x no key / wrong key / another key; signed URLs; traversal;
spoofed forwarding headers). The property-based run over /openapi.json is test_openapi_fuzz.py."""

from __future__ import annotations

import io
import json
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.api.main import create_app
from server.core import image_fetch
from server.core.config import ServerConfig
from server.core.paths import DataPaths
from serverkit import KEY_A, KEY_B, data_uri, png_bytes, tiny_body

WRONG = "key-mallory-000000000"


def auth(key: str | None = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def image(mode: str, fmt: str = "PNG", size=(64, 48), color=None, **save) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if color is not None else 1).save(buffer, fmt, **save)
    return buffer.getvalue()


def animated(fmt: str) -> bytes:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (32, 32), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


@pytest.fixture(scope="module")
def hosted(image_host):
    image_host.endless_paths["/endless.png"] = 0.0  # a fast body that never ends: the byte cap stops it
    image_host.endless_paths["/drip.png"] = 0.5  # a slow one: the deadline stops it
    return image_host


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("hostile"), api_keys=f"alice:{KEY_A},bob:{KEY_B}",
                          allow_private_urls=True, fetch_max_bytes=2**20, fetch_timeout=1, rate_limit=0,
                          max_active_jobs=0)
    with TestClient(create_app(config), client=("127.0.0.1", 50000), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """The default: private, loopback and link-local addresses refused."""
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("guarded"), api_keys=f"alice:{KEY_A}", fetch_timeout=1)
    with TestClient(create_app(config), client=("127.0.0.1", 50000), raise_server_exceptions=False) as client:
        yield client


def post_raw(client, content: bytes, path: str = "/api/ai/queue", content_type: str = "application/json"):
    return client.post(path, content=content, headers={**auth(), "Content-Type": content_type})


# (name, request builder taking (client, host base), expected status, sentence the detail contains)
BAD = [
    ("wrong type", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(num_frames="many")), 400,
     "num_frames: must be an integer"),
    ("out of range", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(num_frames=100_000)), 400,
     "num_frames: must be an integer between 9 and 481"),
    ("NaN", lambda c, h: post_raw(c, json.dumps(tiny_body(frames_per_second=float("nan"))).encode()), 400,
     "frames_per_second: must be a number between 1 and 60"),
    ("huge integer", lambda c, h: post_raw(c, json.dumps(tiny_body(seed=10**400)).encode()), 400,
     "seed: must be an integer between 0 and"),
    ("unknown field", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(steps=50)), 400,
     "steps: is not a parameter of this model"),
    ("bad resolution", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(resolution="100x100")),
     400, "multiples of 64"),
    ("blank prompt", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(prompt="   ")), 400,
     "prompt: must not be empty"),
    ("2 MB prompt", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(prompt="p" * 2_000_000)),
     400, "prompt: must be at most 4000 characters"),
    ("2 MB negative prompt", lambda c, h: c.post("/api/ai/videos/generate", headers=auth(),
                                                 json=tiny_body(negative_prompt="n" * 2_000_000)), 400,
     "negative_prompt: must be at most 4000 characters"),
    ("lone surrogate", lambda c, h: post_raw(c, b'{"prompt": "a\\ud800", "input_image": "data:,"}'), 400,
     "must be valid Unicode text"),
    ("oversized body", lambda c, h: post_raw(c, b'{"prompt": "' + b"x" * (4 * 2**20) + b'"}'), 400,
     "The request body is larger than"),
    ("malformed JSON", lambda c, h: post_raw(c, b'{"prompt": "a",'), 400, "The request body is not valid JSON"),
    ("not UTF-8", lambda c, h: post_raw(c, b'{"prompt": "\xff\xfe"}'), 400, "The request body is not valid JSON"),
    ("deeply nested JSON", lambda c, h: post_raw(c, b"[" * 200_000 + b"]" * 200_000), 400, "nested too deeply"),
    ("nested JSON in a field", lambda c, h: post_raw(c, json.dumps(tiny_body(seed={"a": [[[[1]]]]})).encode()), 400,
     "seed: must be an integer"),
    ("body is a list", lambda c, h: post_raw(c, b"[1, 2]"), 400, "body: must be a JSON object"),
    ("form body", lambda c, h: post_raw(c, b"prompt=a&input_image=b", content_type="application/x-www-form-urlencoded"),
     400, "not valid JSON"),
    ("too many copies", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(num_generations=50)),
     400, "num_generations must be an integer between 1 and 4"),
    ("unknown model", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(model="sora-9")), 404,
     "Model not found: sora-9"),
    ("bad base64", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                       json=tiny_body(input_image="data:image/png;base64,@@@@")), 400, "input_image"),
    ("data URI without comma", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                                   json=tiny_body(input_image="data:image/png;base64")), 400, "','"),
    ("oversized data URI", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                               json=tiny_body(input_image=data_uri(png_bytes() + b"\0" * 1_200_000))),
     400, "larger than the 1 MiB limit"),
    ("not an image", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                         json=tiny_body(input_image=data_uri(b"%PDF-1.4 hello"))), 400,
     "could not be decoded as an image"),
    ("truncated image", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(
        input_image=data_uri(image("RGB", size=(640, 480), color=(9, 9, 9))[:300]))), 400,
     "could not be decoded as an image"),
    ("decompression bomb", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                               json=tiny_body(input_image=h + "/bomb.png")), 400, "megapixel limit"),
    ("animated GIF", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                         json=tiny_body(input_image=data_uri(animated("GIF")))), 400,
     "use PNG, JPEG or WebP"),
    ("animated PNG", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                         json=tiny_body(input_image=data_uri(animated("PNG")))), 400,
     "animated PNG (3 frames); use a still image"),
    ("animated WebP", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                          json=tiny_body(input_image=data_uri(animated("WEBP")))), 400,
     "animated WEBP (3 frames)"),
    ("slow image server", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                              json=tiny_body(input_image=h + "/slow.png")), 400, "within 1 s"),
    ("endless image server", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                                 json=tiny_body(input_image=h + "/endless.png")), 400,
     "larger than the 1 MiB limit"),
    ("dripping image server", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                                  json=tiny_body(input_image=h + "/drip.png")), 400, "within 1 s"),
    ("redirect loop", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(input_image=h + "/loop0")),
     400, "redirected more than 5 times"),
    ("image 404", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                      json=tiny_body(input_image=h + "/missing.png")), 400, "HTTP 404"),
    ("file: URL", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                      json=tiny_body(input_image="file:///etc/passwd")), 400,
     "http(s) URL or a data: URI"),
    ("ftp: URL", lambda c, h: c.post("/api/ai/queue", headers=auth(),
                                     json=tiny_body(input_image="ftp://example.com/a.png")), 400, "input_image"),
    ("unresolvable host", lambda c, h: c.post("/api/ai/queue", headers=auth(), json=tiny_body(
        input_image="http://no-such-host.invalid/a.png")), 400, "could not be resolved"),
    ("bad limit", lambda c, h: c.get("/api/ai/queue?limit=0", headers=auth()), 400, "limit must be between"),
    ("bad status filter", lambda c, h: c.get("/api/ai/queue?status=done", headers=auth()), 400,
     "status must be one of"),
    ("bad page", lambda c, h: c.get("/api/ai/generations?page=0", headers=auth()), 400, "page must be at least 1"),
    ("non-integer limit", lambda c, h: c.get("/api/ai/queue?limit=ten", headers=auth()), 400, "limit"),
    ("method not allowed", lambda c, h: c.patch("/api/ai/queue/x", headers=auth()), 405, "Method Not Allowed"),
]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_inputs_are_4xx_envelopes_with_a_sentence_and_the_server_stays_up(client, hosted):
    mishandled = []
    for name, send, status, sentence in BAD:
        response = send(client, hosted.base)
        body = response.json()
        detail = body["error"].get("detail") or body["error"].get("message") or ""
        if response.status_code != status or sentence not in detail:
            mishandled.append(f"{name}: {response.status_code} {detail[:200]}")
        elif "message" not in body["error"]:  # Oxen's envelope (an unknown model has Oxen's own body)
            assert body["status"] == "error" and body["status_message"] == body["error"]["type"]
    assert mishandled == [], mishandled
    assert len(BAD) >= 40
    assert client.get("/healthz").status_code == 200
    assert client.post("/api/ai/queue", headers=auth(), json=tiny_body()).status_code == 200  # still serving
    queued = client.get("/api/ai/queue", headers=auth()).json()["generations"]
    assert len(queued) == 1  # nothing bad was enqueued


GOOD_IMAGES = {
    "CMYK JPEG": image("CMYK", "JPEG", color=(0, 128, 255, 0)),
    "16-bit PNG": image("I;16", color=30000),
    "RGBA PNG": image("RGBA", color=(255, 0, 0, 100)),
    "grey + alpha PNG": image("LA", color=(100, 50)),
    "palette PNG with transparency": image("P", color=3, transparency=3),
    "1-bit PNG": image("1"),
    "WebP with alpha": image("RGBA", "WEBP", color=(0, 255, 0, 10)),
    "greyscale JPEG": image("L", "JPEG", color=90),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's note on palette transparency
@pytest.mark.parametrize("name", list(GOOD_IMAGES))
def test_unusual_but_valid_images_are_accepted(client, name):
    response = client.post("/api/ai/queue", headers=auth(), json=tiny_body(input_image=data_uri(GOOD_IMAGES[name])))
    assert response.status_code == 200, response.text
    client.delete(f"/api/ai/queue/{response.json()['generations'][0]['generation_id']}", headers=auth())


PRIVATE = ["http://127.0.0.1:{port}/ok.png", "http://localhost:{port}/ok.png", "http://[::1]:{port}/ok.png",
           "http://[::ffff:127.0.0.1]:{port}/ok.png", "http://2130706433:{port}/ok.png", "http://0x7f.1:{port}/ok.png",
           "http://0.0.0.0:{port}/ok.png", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a.png",
           "http://192.168.1.1/a.png", "http://[fe80::1]/a.png", "http://[fd00::1]/a.png", "http://100.64.0.1/a.png"]


@pytest.mark.parametrize("template", PRIVATE)
def test_private_loopback_and_link_local_addresses_are_refused(guarded, image_host, template):
    url = template.format(port=image_host.port)
    response = guarded.post("/api/ai/queue", headers=auth(), json=tiny_body(input_image=url))
    assert response.status_code == 400, response.text
    detail = response.json()["error"]["detail"]
    assert "private, loopback or link-local" in detail or "could not be resolved" in detail, detail


def test_redirect_to_a_private_address_is_refused(guarded, image_host, monkeypatch):
    # 127.0.0.1 plays a public host; its redirect to 127.0.0.2 must be checked like the first hop.
    monkeypatch.setattr(image_fetch, "is_public_address", lambda address: address == "127.0.0.1")
    url = image_host.redirect("/to-private-2", image_host.base.replace("127.0.0.1", "127.0.0.2") + "/ok.png")
    response = guarded.post("/api/ai/queue", headers=auth(), json=tiny_body(input_image=url))
    assert response.status_code == 400 and "127.0.0.2" in response.json()["error"]["detail"]


# ---- access ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice_jobs(client):
    """One queued and one succeeded generation of alice (the result file is real bytes on disk)."""
    store, config = client.app.state.store, client.app.state.config
    ids = [client.post("/api/ai/queue", headers=auth(), json=tiny_body(prompt=f"alice {i}")).json()
           ["generations"][0]["generation_id"] for i in range(2)]
    done = store.claim_next("w-test", 60)
    path = DataPaths(config.data_dir).result_file(done.owner, done.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0\0\0\x18ftypmp42 alice's video")
    assert store.complete(done.id, "w-test", DataPaths(config.data_dir).relative(path), {"seed": 1})
    return {"done": done.id, "queued": next(i for i in ids if i != done.id)}


def access_cases(ids: dict[str, str]) -> list[tuple[str, str]]:
    done, queued = ids["done"], ids["queued"]
    return [("GET", f"/api/ai/queue/{done}"), ("GET", f"/api/ai/queue/{queued}"), ("DELETE", f"/api/ai/queue/{queued}"),
            ("GET", f"/api/ai/generations/{done}"), ("GET", f"/v1/videos/{done}"), ("DELETE", f"/v1/videos/{queued}"),
            ("GET", f"/v1/videos/{done}/content"), ("GET", f"/v1/videos/{done}/content?variant=thumbnail")]


LISTS = ["/api/ai/queue?status=all", "/api/ai/generations", "/v1/videos"]
OTHER = [("GET", "/api/ai/models"), ("GET", "/api/ai/models/ltx-2-3-quality-image-to-video"),
         ("POST", "/api/ai/queue"), ("POST", "/api/ai/videos/generate"), ("POST", "/v1/videos"), ("GET", "/api/events")]


def test_access_matrix_no_key_wrong_key_another_key(client, alice_jobs):
    leaks, cases = [], 0
    for method, path in access_cases(alice_jobs) + [("GET", p) for p in LISTS] + OTHER:
        for headers in ({}, auth(WRONG), {"Authorization": KEY_A}):  # none, wrong, right key without "Bearer"
            cases += 1
            response = client.request(method, path, headers=headers, json=tiny_body() if method == "POST" else None)
            if response.status_code != 401:
                leaks.append(f"{method} {path} with {headers}: {response.status_code}")
    for method, path in access_cases(alice_jobs):
        cases += 1
        response = client.request(method, path, headers=auth(KEY_B))
        # 404 (an id of another key is as unknown as a made-up one; echoing the asked id reveals nothing)
        if response.status_code != 404 or "alice" in response.text:
            leaks.append(f"{method} {path} as bob: {response.status_code}")
    for path in LISTS:
        cases += 1
        response = client.get(path, headers=auth(KEY_B))
        if response.status_code != 200 or any(job_id in response.text for job_id in alice_jobs.values()):
            leaks.append(f"GET {path} as bob lists alice's generations")
    assert leaks == [] and cases >= 60, leaks
    # The owner still sees both (the matrix changed nothing of alice's).
    assert client.get(f"/api/ai/queue/{alice_jobs['queued']}", headers=auth()).json()["status"] == "queued"


def test_events_of_one_key_never_reach_another(client, alice_jobs):
    with client.stream("GET", "/api/events", headers=auth(KEY_B)) as stream:
        first = next(stream.iter_lines())
        assert first == ": connected"
    with client.stream("GET", "/api/events", headers=auth()) as stream:
        lines = stream.iter_lines()
        seen = [next(lines) for _ in range(4)]
    assert seen[2] == "event: media_generation_completed"
    assert alice_jobs["done"] in seen[3]  # alice's own completion, replayed from the grace window
    svc = client.app.state.services
    hub_rows = svc.store.events_since(0, "bob", ("media_generation_completed",))
    assert hub_rows == []


def test_signed_result_urls_cannot_be_forged_altered_or_used_after_expiry(client, alice_jobs):
    svc = client.app.state.services
    done, queued = alice_jobs["done"], alice_jobs["queued"]
    good = f"/api/results/{done}.mp4?{svc.signer.query(done)}"
    assert client.get(good).status_code == 200 and client.get(good).content.endswith(b"alice's video")
    expires = good.split("expires=")[1].split("&")[0]
    signature = good.split("signature=")[1]
    attempts = {
        "no signature": f"/api/results/{done}.mp4",
        "forged": f"/api/results/{done}.mp4?expires={expires}&signature={'0' * len(signature)}",
        "another id": f"/api/results/{queued}.mp4?expires={expires}&signature={signature}",
        "later expiry": f"/api/results/{done}.mp4?expires={int(expires) + 3600}&signature={signature}",
        "expired": f"/api/results/{done}.mp4?{svc.signer.query(done, now=time.time() - 2 * 86400)}",
        "garbage expiry": f"/api/results/{done}.mp4?expires=soon&signature={signature}",
    }
    for name, url in attempts.items():
        response = client.get(url)
        assert response.status_code == 403, name
        # Not "unauthenticated": that title asks for an API key, which a result URL never takes.
        assert response.json()["error"]["type"] == "forbidden", name
        assert response.json()["error"]["detail"] == "This result URL is invalid or has expired."


@pytest.mark.parametrize("path", [
    "/api/results/..%2F..%2Fjobs.sqlite3.mp4", "/api/results/%2e%2e/%2e%2e/url-signing.key",
    "/api/results/../../jobs.sqlite3", "/api/results/..%5C..%5Cjobs.sqlite3.mp4",
    "/api/results/%2Fetc%2Fpasswd.mp4", "/api/results/....%2F%2F....%2F%2Fjobs.sqlite3.mp4",
])
def test_path_traversal_on_the_file_route_reveals_nothing(client, path):
    response = client.get(path + "?expires=9999999999&signature=x")
    assert response.status_code in (403, 404)
    assert b"SQLite" not in response.content and b"root:" not in response.content


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"},
    {"X-Forwarded-For": "::1", "X-Forwarded-Host": "localhost"}, {"Host": "localhost"},
    {"X-Client-IP": "127.0.0.1", "True-Client-IP": "127.0.0.1"},
])
def test_forwarding_headers_do_not_make_a_remote_client_local(tmp_path, headers):
    app = create_app(ServerConfig(data_dir=tmp_path))  # no keys: loopback clients only
    with TestClient(app, client=("203.0.113.7", 40000)) as remote:
        response = remote.get("/api/ai/queue", headers=headers)
        assert response.status_code == 401
        assert "only answers loopback clients" in response.json()["error"]["detail"]
