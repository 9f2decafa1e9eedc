"""The MP4 writer: exact frames, fps and audio duration read back; atomic output."""

from fractions import Fraction

import numpy as np
import pytest

from pipeline.generation.mp4 import QUALITY_TABLE, EncodingError, write_mp4
from sample_media import read_mp4


def gradient_frames(count: int, height: int = 64, width: int = 96, chunk: int = 4):
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        frames = np.zeros((n, height, width, 3), dtype=np.uint8)
        for i in range(n):
            frames[i] = (start + i) * 3 % 256
        yield frames


def test_quality_table_orders_crf_and_bitrate():
    crfs = [QUALITY_TABLE[q].crf for q in ("low", "medium", "high", "maximum")]
    assert crfs == sorted(crfs, reverse=True)
    assert QUALITY_TABLE["high"].crf == 18


@pytest.mark.parametrize("fps", [Fraction(24), Fraction(2997, 125), Fraction(30000, 1001), Fraction(25, 2)])
def test_frames_fps_and_audio_duration_are_exact(tmp_path, fps):
    frames = 37
    samples = round(frames / fps * 48_000)
    audio = np.sin(np.linspace(0, 200, samples, dtype=np.float32))[None].repeat(2, 0) * 0.5
    out = write_mp4(tmp_path / "a.mp4", gradient_frames(frames), 96, 64, fps, "medium", audio)
    facts = read_mp4(out)
    assert facts.video_frames == frames
    assert facts.fps == fps
    assert (facts.video_codec, facts.pix_fmt) == ("h264", "yuv420p")
    assert (facts.audio_codec, facts.audio_rate, facts.audio_channels) == ("aac", 48_000, 2)
    assert facts.audio_duration == pytest.approx(frames / float(fps), abs=1 / 48_000)
    assert facts.video_duration == pytest.approx(frames / float(fps), abs=1e-3)


def test_no_audio_means_no_audio_track(tmp_path):
    facts = read_mp4(write_mp4(tmp_path / "v.mp4", gradient_frames(9), 96, 64, Fraction(24)))
    assert facts.audio_codec is None and facts.video_frames == 9


def test_faststart_puts_the_index_first(tmp_path):
    out = write_mp4(tmp_path / "f.mp4", gradient_frames(9), 96, 64, Fraction(24))
    head = out.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096)


def test_higher_quality_makes_larger_files(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (9, 64, 96, 3), dtype=np.uint8)
    low = write_mp4(tmp_path / "low.mp4", [frames], 96, 64, Fraction(24), "low").stat().st_size
    maximum = write_mp4(tmp_path / "max.mp4", [frames], 96, 64, Fraction(24), "maximum").stat().st_size
    assert maximum > low


def test_failure_midway_leaves_nothing_behind(tmp_path):
    def broken():
        yield from gradient_frames(8)
        raise RuntimeError("decoder crashed")

    with pytest.raises(RuntimeError, match="decoder crashed"):
        write_mp4(tmp_path / "x.mp4", broken(), 96, 64, Fraction(24), audio=np.zeros((2, 100), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_wrong_frame_shape_is_an_encoding_error(tmp_path):
    with pytest.raises(EncodingError, match="not uint8 64x96x3"):
        write_mp4(tmp_path / "x.mp4", [np.zeros((2, 64, 95, 3), np.uint8)], 96, 64, Fraction(24))
    assert list(tmp_path.iterdir()) == []


def test_final_name_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.mp4"
    seen = []

    def watched():
        for chunk in gradient_frames(12):
            seen.append(target.exists())
            yield chunk

    write_mp4(target, watched(), 96, 64, Fraction(24))
    assert seen and not any(seen)
    assert target.exists() and oct(target.stat().st_mode & 0o777) == "0o644"
