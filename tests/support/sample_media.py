"""Sample media for the tests: noise images in any format and an independent MP4 reader (PyAV)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(width: int, height: int, seed: int = 0, mode: str = "RGB", fmt: str = "PNG") -> bytes:
    """A random-noise image encoded in `fmt`."""
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@dataclass
class Mp4Facts:
    video_frames: int
    fps: Fraction
    width: int
    height: int
    pix_fmt: str
    video_codec: str
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    audio_duration: float | None  # seconds, from the stream's declared duration
    video_duration: float
    first_frame: np.ndarray


def read_mp4(path: Path) -> Mp4Facts:
    """Read back what a player would see, with PyAV (an independent demuxer and decoder)."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = list(container.decode(video=0))
        return Mp4Facts(
            video_frames=len(frames),
            fps=Fraction(video.average_rate),
            width=video.codec_context.width,
            height=video.codec_context.height,
            pix_fmt=video.codec_context.pix_fmt,
            video_codec=video.codec_context.name,
            audio_codec=audio.codec_context.name if audio else None,
            audio_rate=audio.codec_context.sample_rate if audio else None,
            audio_channels=audio.codec_context.channels if audio else None,
            audio_duration=float(audio.duration * audio.time_base) if audio else None,
            video_duration=float(video.duration * video.time_base),
            first_frame=frames[0].to_ndarray(format="rgb24"),
        )
