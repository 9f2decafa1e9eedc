"""The request type: defaults, ranges and the messages a client sees."""

import pytest

from pipeline.params import RequestError
from server.api.schemas import DEFAULT_NEGATIVE_PROMPT, VideoRequest, parse_request

BASE = {"prompt": "a cat", "input_image": "https://example.com/cat.png"}


def errors_of(**fields) -> dict[str, str]:
    with pytest.raises(RequestError) as caught:
        parse_request({**BASE, **fields})
    return {error.field: error.message for error in caught.value.errors}


def test_defaults_follow_the_contract():
    request = parse_request(BASE)
    assert request.num_frames == 121
    assert request.resolution == "auto"
    assert request.frames_per_second == 24
    assert request.image_strength == 0.7
    assert request.generate_audio is True
    assert request.video_quality == "high"
    assert request.negative_prompt == DEFAULT_NEGATIVE_PROMPT
    assert request.seed is None


def test_required_fields_are_named():
    with pytest.raises(RequestError) as caught:
        parse_request({})
    assert {e.field: e.message for e in caught.value.errors} == {
        "prompt": "is required", "input_image": "is required"
    }


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("num_frames", 8, "must be an integer between 9 and 481 (got 8)"),
        ("num_frames", 482, "must be an integer between 9 and 481 (got 482)"),
        ("num_frames", 12.5, "must be an integer (got 12.5)"),
        ("frames_per_second", 0.5, "must be a number between 1 and 60 (got 0.5)"),
        ("frames_per_second", 61, "must be a number between 1 and 60 (got 61)"),
        ("image_strength", 1.5, "must be a number between 0 and 1 (got 1.5)"),
        ("image_strength", -0.1, "must be a number between 0 and 1 (got -0.1)"),
        ("seed", -1, "must be an integer between 0 and 9223372036854775807 (got -1)"),
        ("generate_audio", "maybe", "must be true or false (got 'maybe')"),
        ("video_quality", "ultra", "must be one of 'low', 'medium', 'high' or 'maximum' (got 'ultra')"),
        ("prompt", "   ", "must not be empty"),
        ("input_image", "ftp://x/y.png", "must be an http(s) URL or a data: URI"),
    ],
)
def test_each_violation_names_its_field_in_a_sentence(field, value, expected):
    assert errors_of(**{field: value}) == {field: expected}


def test_unknown_fields_are_rejected_by_name():
    assert errors_of(guidance_scale=3) == {"guidance_scale": "is not a parameter of this model"}


def test_several_violations_are_all_reported():
    found = errors_of(num_frames=1, image_strength=2, resolution="huge")
    assert set(found) == {"num_frames", "image_strength", "resolution"}


@pytest.mark.parametrize("resolution", ["auto", "square_hd", "square", "portrait_4_3", "portrait_16_9",
                                        "landscape_4_3", "landscape_16_9", "1024x576", "128x2048"])
def test_accepted_resolutions(resolution):
    assert parse_request({**BASE, "resolution": resolution}).resolution == resolution


@pytest.mark.parametrize("resolution", ["1000x576", "64x64", "4096x256", "square-hd", "1024*576"])
def test_rejected_resolutions_say_what_is_allowed(resolution):
    message = errors_of(resolution=resolution)["resolution"]
    assert resolution in message
    assert "64" in message or "one of" in message


def test_data_uri_is_an_accepted_image():
    assert parse_request({**BASE, "input_image": "data:image/png;base64,AAAA"}).input_image.startswith("data:")


def test_the_request_is_immutable_and_round_trips():
    request = VideoRequest(**BASE, seed=7)
    assert VideoRequest.model_validate(request.model_dump()) == request
    with pytest.raises(Exception):  # noqa: B017 - frozen pydantic models raise ValidationError
        request.seed = 8
