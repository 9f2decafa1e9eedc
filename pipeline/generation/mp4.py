"""Streaming MP4 writer on imageio-ffmpeg's bundled ffmpeg: H.264 yuv420p + AAC, +faststart.

Frames go to ffmpeg's stdin as they are produced, so memory never holds the whole clip as
uint8. The file is written under a temporary name beside the target and renamed only once
ffmpeg has finished successfully: a half-written file never carries the final name.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from pipeline.geometry import OUTPUT_SAMPLE_RATE


@dataclass(frozen=True)
class EncodingSettings:
    """libx264 settings for one `video_quality` value."""

    crf: int
    preset: str
    audio_bitrate: str


# video_quality -> encoder settings. Upstream (fal) treats video_quality as the file's encoding
# quality, not a change of steps. CRF 18 is visually lossless for most content; each step of
# 5-6 CRF roughly halves or doubles the file size. Slower presets buy size at equal quality.
QUALITY_TABLE: dict[str, EncodingSettings] = {
    "low": EncodingSettings(crf=28, preset="veryfast", audio_bitrate="96k"),
    "medium": EncodingSettings(crf=23, preset="fast", audio_bitrate="128k"),
    "high": EncodingSettings(crf=18, preset="medium", audio_bitrate="192k"),
    "maximum": EncodingSettings(crf=12, preset="slow", audio_bitrate="320k"),
}


class EncodingError(RuntimeError):
    """ffmpeg failed; the message carries the end of its error output."""


def encoding_settings(video_quality: str) -> EncodingSettings:
    """The encoder settings for a `video_quality` value."""
    return QUALITY_TABLE[video_quality]


def ffmpeg_command(
    width: int,
    height: int,
    fps: Fraction,
    settings: EncodingSettings,
    output: Path,
    audio_path: Path | None = None,
    audio_rate: int = OUTPUT_SAMPLE_RATE,
    threads: int = 0,
) -> list[str]:
    """The ffmpeg command line that reads rgb24 frames on stdin (and raw f32 stereo audio from a file)."""
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-nostdin",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-framerate", f"{fps.numerator}/{fps.denominator}", "-i", "pipe:0",
    ]
    if audio_path is not None:
        command += ["-f", "f32le", "-ar", str(audio_rate), "-ac", "2", "-i", str(audio_path)]
    command += [
        "-map", "0:v:0", "-c:v", "libx264", "-preset", settings.preset, "-crf", str(settings.crf),
        "-pix_fmt", "yuv420p", "-threads", str(threads),
    ]
    if audio_path is not None:
        command += ["-map", "1:a:0", "-c:a", "aac", "-b:a", settings.audio_bitrate]
    command += ["-movflags", "+faststart", "-f", "mp4", str(output)]
    return command


def write_mp4(
    output: Path,
    frames: Iterable[np.ndarray],
    width: int,
    height: int,
    fps: Fraction,
    video_quality: str = "high",
    audio: np.ndarray | None = None,
    audio_rate: int = OUTPUT_SAMPLE_RATE,
    threads: int = 0,
) -> Path:
    """Encode frame chunks (uint8, [T,H,W,3] or [H,W,3]) and optional stereo audio ([2,S] float) to `output`.

    Returns the final path. On any failure the temporary file is removed and nothing is left at
    `output`.
    """
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    settings = encoding_settings(video_quality)
    fd, partial_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".partial", dir=output.parent)
    os.close(fd)
    partial = Path(partial_name)
    audio_file: Path | None = None
    try:
        if audio is not None:
            audio_file = partial.with_suffix(".f32")
            # Interleaved little-endian float32 is ffmpeg's f32le: written once, read by ffmpeg.
            np.ascontiguousarray(np.clip(audio, -1.0, 1.0).T, dtype="<f4").tofile(audio_file)
        command = ffmpeg_command(width, height, fps, settings, partial, audio_file, audio_rate, threads)
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=stderr)
            assert process.stdin is not None
            try:
                for chunk in frames:
                    if chunk.shape[-3:] != (height, width, 3) or chunk.dtype != np.uint8:
                        raise EncodingError(f"frame chunk {chunk.shape} {chunk.dtype} is not uint8 {height}x{width}x3")
                    process.stdin.write(np.ascontiguousarray(chunk).data)
                process.stdin.close()
            except BaseException:
                process.kill()
                process.wait()
                raise
            if process.wait() != 0:
                stderr.seek(0)
                detail = stderr.read().decode(errors="replace").strip().splitlines()[-3:]
                raise EncodingError(f"ffmpeg failed ({process.returncode}): {' | '.join(detail)}")
        partial.chmod(0o644)  # mkstemp creates 0600; results are served and shared
        os.replace(partial, output)
        return output
    finally:
        partial.unlink(missing_ok=True)
        if audio_file is not None:
            audio_file.unlink(missing_ok=True)
