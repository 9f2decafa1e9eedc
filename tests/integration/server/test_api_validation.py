"""API validation, authentication and the error envelope, on the app in-process (no live server).

The same app `serve` runs, with two API keys and an embedded SQLite store; requests come from a
loopback client address, as the loopback rule expects.
"""

from __future__ import annotations

import pytest

from serverkit import KEY_A, tiny_body


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def test_missing_or_wrong_key_is_401_in_the_envelope(client):
    for headers in ({}, {"Authorization": "Bearer nope-nope-nope"}, {"Authorization": KEY_A}):
        response = client.get("/api" + "/ai/queue", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == "error" and body["status_message"] == "unauthenticated"
        assert body["error"]["type"] == "unauthenticated"
    assert client.post("/api" + "/ai/queue", json=tiny_body()).status_code == 401
    assert client.get("/api" + "/ai/models").status_code == 401
    assert client.get("/api" + "/events").status_code == 401


@pytest.mark.parametrize("endpoint", ["/ai/queue", "/ai/videos/generate"])
@pytest.mark.parametrize(
    ("change", "field"),
    [({"num_frames": 5}, "num_frames"), ({"image_strength": 2}, "image_strength"),
     ({"resolution": "huge"}, "resolution"), ({"video_quality": "ultra"}, "video_quality"),
     ({"prompt": None}, "prompt"), ({"surprise": 1}, "surprise"), ({"input_image": "ftp://x/y.png"}, "input_image")],
)
def test_parameter_errors_are_400_naming_the_field(client, endpoint, change, field):
    body = {k: v for k, v in (tiny_body() | change).items() if v is not None}
    response = client.post("/api" + endpoint, headers=auth(), json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["status"] == "error" and error["status_message"] == "invalid_params"
    assert error["error"]["type"] == "invalid_params" and error["error"]["detail"].startswith(field)


def test_queue_specific_errors(client):
    for count in (0, 5, "two"):
        response = client.post("/api" + "/ai/queue", headers=auth(), json=tiny_body(num_generations=count))
        assert response.status_code == 400
        assert response.json()["error"]["detail"] == "num_generations must be an integer between 1 and 4"
    wrong_model = client.post("/api" + "/ai/queue", headers=auth(), json=tiny_body(model="other-model"))
    assert wrong_model.status_code == 404
    assert wrong_model.json() == {"error": {"message": "Model not found: other-model"}}
    no_model = client.post("/api" + "/ai/queue", headers=auth(), json={k: v for k, v in tiny_body().items()
                                                                         if k != "model"})
    assert no_model.status_code == 400 and "model" in no_model.json()["error"]["detail"]
    broken = client.post("/api" + "/ai/queue", headers=auth(), content=b"{not json")
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["detail"]
    sync = client.post("/api" + "/ai/videos/generate", headers=auth(), json=tiny_body(response_format="mp4"))
    assert sync.status_code == 400 and sync.json()["error"]["detail"].startswith("response_format")
    unknown = client.get("/api" + "/ai/queue/00000000-0000-0000-0000-000000000000", headers=auth())
    assert unknown.status_code == 404
    assert unknown.json() == {"error": {"type": "resource_not_found",
                                        "title": "The requested resource could not be found"},
                              "status": "error", "status_message": "resource_not_found"}
    assert client.delete("/api" + "/ai/queue/nope", headers=auth()).status_code == 404
