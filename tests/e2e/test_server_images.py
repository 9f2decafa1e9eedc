"""Every input-image refusal through the live API: a 400 with a sentence, nothing enqueued.

The shared server runs with `--allow-private-urls` so the local image host on 127.0.0.1 is
reachable; the private-address refusal with the setting off is shown against the server of
test_server_restart.py and in test_server_units.py.
"""

from __future__ import annotations

import httpx
import pytest

from serverkit import KEY_A, data_uri, png_bytes, tiny_body, wait_for


@pytest.fixture(scope="module")
def live(keyed_live):
    return keyed_live


AUTH = {"Authorization": f"Bearer {KEY_A}"}


@pytest.mark.parametrize(
    ("path", "sentence"),
    [
        ("/big.png", "input_image is larger than the 1 MiB limit."),
        ("/bomb.png", "above the 50 megapixel limit."),
        ("/text.png", "input_image could not be decoded as an image"),
        ("/anim.gif", "input_image is GIF; use PNG, JPEG or WebP."),
        ("/slow.png", "input_image could not be fetched within 1 s."),
        ("/missing.png", "input_image URL answered HTTP 404 instead of the image."),
        ("/loop0", "input_image URL redirected more than 5 times."),
    ],
)
def test_input_image_refusals_are_400_with_a_sentence(live, image_host, path, sentence):
    response = httpx.post(live.api + "/ai/queue", json=tiny_body(input_image=image_host.base + path), headers=AUTH,
                          timeout=30)
    assert response.status_code == 400, response.text
    detail = response.json()["error"]["detail"]
    assert sentence in detail and detail.endswith(".")
    listed = httpx.get(live.api + "/ai/queue", params={"status": "all"}, headers=AUTH).json()["generations"]
    assert all(row["input_image"] != image_host.base + path for row in listed)  # nothing was enqueued


@pytest.mark.parametrize(
    ("uri", "sentence"),
    [
        ("data:image/png;base64,!!!notbase64", "input_image data URI is not valid base64."),
        (data_uri(b"GIF89a not really"), "input_image could not be decoded as an image"),
        ("file:///etc/hostname", "input_image must be an http(s) URL or a data: URI."),
        ("http://name.invalid/a.png", "could not be resolved"),
    ],
)
def test_bad_data_uris_and_schemes(live, uri, sentence):
    response = httpx.post(live.api + "/ai/queue", json=tiny_body(input_image=uri), headers=AUTH, timeout=30)
    assert response.status_code == 400 and sentence in response.json()["error"]["detail"]


def test_image_is_fetched_at_accept_time_through_redirects(live, image_host):
    url = image_host.add("/short-lived.png", png_bytes(96, 64))
    redirect = image_host.redirect("/presigned", url)
    response = httpx.post(live.api + "/ai/queue", json=tiny_body(input_image=redirect), headers=AUTH, timeout=30)
    assert response.status_code == 200
    del image_host.routes["/short-lived.png"]  # the URL "expires" before the job runs
    generation_id = response.json()["generations"][0]["generation_id"]
    row = wait_for(lambda: httpx.get(f"{live.api}/ai/queue/{generation_id}", headers=AUTH).json(),
                   lambda r: r["status"] in ("succeeded", "failed"), timeout=60)
    assert row["status"] == "succeeded" and row["input_image"] == redirect
