"""`/v1/videos` (driven by the real `openai` SDK) and `/api/ai/generations`, on the app in-process.

No worker runs here, so jobs stay queued: this covers creation, mapping, listing, paging, cancel,
OpenAI-shaped errors and per-key isolation; tests/e2e/test_openai_videos.py runs jobs to the end.
"""

from __future__ import annotations

import io
import threading

import openai
import pytest
from fastapi.testclient import TestClient

from server.api.deps import QUICK_PAGE_ROWS
from server.api.main import create_app
from server.api.schemas import MODEL_ID
from server.core.config import ServerConfig
from serverkit import KEY_A, KEY_B, lock_exclusively, png_bytes, tiny_body

pytestmark = pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("api"), api_keys=f"alice:{KEY_A},bob:{KEY_B}")
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as client:
        yield client


def sdk(client: TestClient, key: str = KEY_A) -> openai.OpenAI:
    # TestClient is an httpx.Client: the SDK's requests go to the in-process app.
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=client, max_retries=0)


def auth(key: str = KEY_A) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def create(client: TestClient, key: str = KEY_A, **extra) -> openai.types.Video:
    image = ("start.png", io.BytesIO(png_bytes(128, 128)), "image/png")
    return sdk(client, key).videos.create(model=MODEL_ID, prompt="a red square", input_reference=image,
                                          seconds="0.4", size="128x128",
                                          extra_body={"frames_per_second": 20, "generate_audio": False} | extra)


def test_sdk_create_maps_seconds_and_size_onto_the_model(client):
    video = create(client, seed=7)
    assert video.object == "video" and video.status == "queued" and video.model == MODEL_ID
    assert video.size == "128x128" and video.seconds == "0.45" and video.progress == 0  # 9 frames at 20 fps
    row = client.get(f"/api/ai/queue/{video.id}", headers=auth()).json()
    assert row["num_frames"] == 9 and row["resolution"] == "128x128" and row["frames_per_second"] == 20
    assert row["generate_audio"] is False and row["seed"] == 7 and row["status"] == "queued"
    assert sdk(client).videos.retrieve(video.id).id == video.id
    json_made = client.post("/v1/videos", headers=auth(), json={
        "prompt": "p", "input_reference": {"image_url": tiny_body()["input_image"]}, "seconds": "1"}).json()
    assert json_made["seconds"] == "1.04"  # 25 frames at 24 fps: the next 8k+1 past 24


def test_sdk_errors_are_openai_shaped(client):
    api = sdk(client)
    image = ("start.png", io.BytesIO(png_bytes(128, 128)), "image/png")
    with pytest.raises(openai.BadRequestError) as bad:
        api.videos.create(model=MODEL_ID, prompt="p", input_reference=image, size="100x100")
    assert bad.value.body["param"] == "size" and "multiples of 64" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="at most 481"):
        api.videos.create(model=MODEL_ID, prompt="p", input_reference=image, seconds="60")
    with pytest.raises(openai.NotFoundError, match=MODEL_ID):
        api.videos.create(model="sora-2", prompt="p", input_reference=image)
    with pytest.raises(openai.BadRequestError, match="input_reference"):
        api.videos.create(model=MODEL_ID, prompt="p")
    with pytest.raises(openai.BadRequestError, match="surprise"):
        api.videos.create(model=MODEL_ID, prompt="p", input_reference=image, extra_body={"surprise": 1})
    with pytest.raises(openai.NotFoundError):
        api.videos.retrieve("nope")
    with pytest.raises(openai.AuthenticationError):
        sdk(client, "wrong-key-wrong-key").videos.list()
    raw = client.get("/v1/videos/nope", headers=auth()).json()
    assert set(raw["error"]) == {"message", "type", "param", "code"} and raw["error"]["code"] == "not_found"
    # The Oxen routes keep their own envelope.
    assert client.get("/api/ai/queue/nope", headers=auth()).json()["status_message"] == "resource_not_found"


def test_sdk_list_pages_with_cursor_and_delete_cancels(client):
    ids = [create(client, KEY_B).id for _ in range(3)]
    api = sdk(client, KEY_B)
    first = api.videos.list(limit=2)
    assert [v.id for v in first.data] == ids[::-1][:2] and first.has_more
    assert [v.id for v in api.videos.list(limit=2)] == ids[::-1]  # auto-paging follows `after`
    assert [v.id for v in api.videos.list(order="asc")] == ids
    gone = api.videos.delete(ids[0])
    assert gone.object == "video.deleted" and gone.deleted and gone.id == ids[0]
    cancelled = api.videos.retrieve(ids[0])
    assert cancelled.status == "failed" and cancelled.error.code == "cancelled"
    assert client.get(f"/api/ai/queue/{ids[0]}", headers=auth(KEY_B)).json()["status"] == "cancelled"
    with pytest.raises(openai.ConflictError):
        api.videos.download_content(ids[1])
    with pytest.raises(openai.NotFoundError):  # alice cannot see bob's
        sdk(client).videos.retrieve(ids[1])


def test_generations_browse_pages_and_isolates_keys(client, tmp_path_factory):
    config = ServerConfig(data_dir=tmp_path_factory.mktemp("browse"), api_keys=f"alice:{KEY_A},bob:{KEY_B}")
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as fresh:
        made = [g["generation_id"] for _ in range(3)
                for g in fresh.post("/api/ai/queue", headers=auth(), json=tiny_body(num_generations=2)).json()[
                    "generations"]]
        fresh.post("/api/ai/queue", headers=auth(KEY_B), json=tiny_body())
        page1 = fresh.get("/api/ai/generations", headers=auth(), params={"page_size": 4}).json()
        assert {k: page1[k] for k in ("count", "page_number", "page_size", "total_entries", "total_pages")} == {
            "count": 4, "page_number": 1, "page_size": 4, "total_entries": 6, "total_pages": 2}
        page2 = fresh.get("/api/ai/generations", headers=auth(), params={"page_size": 4, "page": 2}).json()
        seen = [g["generation_id"] for g in page1["generations"] + page2["generations"]]
        assert seen == made[::-1] and page2["count"] == 2  # newest first, no overlap
        one = fresh.get(f"/api/ai/generations/{made[0]}", headers=auth()).json()
        assert one["status"] == "success" and one["status_message"] == "resource_found"
        assert one["generation"] == fresh.get(f"/api/ai/queue/{made[0]}", headers=auth()).json()
        assert fresh.get(f"/api/ai/generations/{made[0]}", headers=auth(KEY_B)).status_code == 404
        bob = fresh.get("/api/ai/generations", headers=auth(KEY_B)).json()
        assert bob["total_entries"] == 1 and bob["count"] == 1
        none = fresh.get("/api/ai/generations", headers=auth(), params={"status": "succeeded"}).json()
        assert none["total_entries"] == 0 and none["total_pages"] == 0
        for bad in ({"page": 0}, {"page_size": 1001}, {"page_size": 0}, {"status": "weird"}):
            response = fresh.get("/api/ai/generations", headers=auth(), params=bad)
            assert response.status_code == 400 and response.json()["status_message"] == "invalid_params"
        # The queue list says when there is more instead of silently capping.
        listed = fresh.get("/api/ai/queue", headers=auth(), params={"limit": 4}).json()
        assert listed["count"] == 4 and listed["total"] == 6 and listed["has_more"] is True
        rest = fresh.get("/api/ai/queue", headers=auth(), params={"limit": 4, "offset": 4}).json()
        assert [g["generation_id"] for g in listed["generations"] + rest["generations"]] == made
        assert rest["has_more"] is False


def test_lists_past_the_event_loops_share_are_whole_and_in_order(tmp_path):
    """The list routes read a page of up to `QUICK_PAGE_ROWS` in the event loop and a longer one in the
    thread pool: every size around that line, and a store locked past the quick read's patience,
    give the same rows in the same order."""
    config = ServerConfig(data_dir=tmp_path, api_keys=f"alice:{KEY_A},bob:{KEY_B}", rate_limit=0, max_active_jobs=0)
    with TestClient(create_app(config), client=("127.0.0.1", 50000)) as fresh:
        made = [g["generation_id"] for _ in range(7)
                for g in fresh.post("/api/ai/queue", headers=auth(), json=tiny_body(num_generations=4)).json()[
                    "generations"]]
        assert len(made) == 28 > QUICK_PAGE_ROWS
        store = fresh.app.state.services.store
        patient, read_page = [], store.page
        store.page = lambda **filters: patient.append(filters) or read_page(**filters)  # the thread pool's read

        def queue(**params) -> dict:
            reply = fresh.get("/api/ai/queue", headers=auth(), params=params)
            assert reply.status_code == 200, reply.text
            return reply.json()

        whole = queue()
        assert [g["generation_id"] for g in whole["generations"]] == made and set(whole) == {"count", "generations"}
        for limit, offset in ((25, 0), (26, 2), (24, 0), (3, 25), (30, 27)):
            page = queue(limit=limit, offset=offset)
            assert [g["generation_id"] for g in page["generations"]] == made[offset:offset + limit]
            assert page["total"] == 28 and page["has_more"] is (offset + limit < 28)
        for size, number in ((27, 1), (27, 2), (25, 1), (26, 1)):
            page = fresh.get("/api/ai/generations", headers=auth(), params={"page_size": size, "page": number}).json()
            assert [g["generation_id"] for g in page["generations"]] == made[::-1][(number - 1) * size:number * size]
            assert page["total_entries"] == 28
        assert fresh.get("/api/ai/queue", headers=auth(KEY_B)).json() == {"count": 0, "generations": []}
        bad = fresh.get("/api/ai/queue", headers=auth(), params={"limit": "ten"})
        assert bad.status_code == 400
        assert bad.json()["error"]["detail"].startswith("limit: Input should be a valid integer")
        # Only pages with more rows than the loop's share went to the thread pool (not limit 30 from offset
        # 27: one row is left there): the whole list, limit 26, page sizes 27 and 26.
        assert [filters["limit"] for filters in patient] == [1000, 26, 27, 26]
        patient.clear()

        # A store no reader may open for a moment: the list waits for it in a thread, then answers in full.
        store.engine.dispose()
        store.quick_engine.dispose()
        release = threading.Timer(0.5, lock_exclusively(tmp_path / "jobs.sqlite3"))
        release.start()
        try:
            assert [g["generation_id"] for g in queue(limit=5)["generations"]] == made[:5]
        finally:
            release.join()
        assert len(patient) == 1  # read in the thread pool, once the lock was gone
        assert [g["generation_id"] for g in queue()["generations"]] == made and len(patient) == 2


def test_a_multipart_body_with_two_files_is_refused_in_openai_shape(client):
    files = [("input_reference", ("a.png", png_bytes(), "image/png")), ("extra", ("b.png", png_bytes(), "image/png"))]
    response = client.post("/v1/videos", headers={"Authorization": f"Bearer {KEY_A}"}, files=files,
                           data={"prompt": "two files", "size": "128x128"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "multipart" in error["message"]
