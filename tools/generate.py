"""`ltx-server generate`: offline generation from the command line, one job or a JSONL batch.

The model is loaded once per invocation, so a batch pays for one load. Every request is
validated before the model loads: a bad line is reported with its line number and nothing runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.engine import Engine, EngineSpec, check_loras
from pipeline.errors import LoraError, Refused, WeightsError
from pipeline.params import VIDEO_QUALITIES, RequestError
from server.api.schemas import VideoRequest, conditioning_request, parse_request
from server.core.errors import CommandError
from server.core.image_fetch import fetch_image_bytes

# Request field -> (flag, argparse options). Every model parameter has a flag.
PARAMETER_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "num_frames": ("--num-frames", {"type": int, "help": "frames to deliver, 9-481 (default 121)"}),
    "resolution": ("--resolution", {"help": "auto, a preset (square_hd, landscape_16_9, ...) or WIDTHxHEIGHT"}),
    "frames_per_second": ("--fps", {"type": float, "help": "playback rate 1-60, fractions kept exact (default 24)"}),
    "image_strength": ("--image-strength", {"type": float, "help": "0-1; 1.0 keeps the first frame (default 0.7)"}),
    "generate_audio": (
        "--generate-audio",
        {"type": lambda v: _parse_bool(v), "metavar": "true|false", "help": "false: no audio track (default true)"},
    ),
    "video_quality": ("--video-quality", {"choices": VIDEO_QUALITIES, "help": "MP4 encoding quality (default high)"}),
    "negative_prompt": ("--negative-prompt", {"help": "what to steer away from"}),
    "seed": ("--seed", {"type": int, "help": "random seed; omitted: chosen and printed"}),
}
PARAMETER_FLAGS["enhance_prompt"] = (  # extension
    "--enhance-prompt",
    {"type": lambda v: _parse_bool(v), "metavar": "true|false",
     "help": "let Gemma 3 rewrite the prompt from the start image first (default false); the rewrite is printed"},
)


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `generate` sub-command."""
    parser = subparsers.add_parser(
        "generate",
        help="generate videos offline (no server)",
        description="Generate one video (--image/--prompt/-o) or a batch (--batch FILE.jsonl --out-dir DIR).",
    )
    parser.add_argument("--image", help="start image: a local path, an http(s) URL or a data: URI")
    parser.add_argument("--prompt", help="text that guides the video")
    for flag, options in PARAMETER_FLAGS.values():
        parser.add_argument(flag, default=None, **options)
    parser.add_argument("-o", "--output", type=Path, help="output MP4 path (single job)")
    parser.add_argument("--batch", type=Path, help="JSONL file: one request object per line")
    parser.add_argument("--out-dir", type=Path, help="directory for the batch's MP4s and results.jsonl")
    parser.add_argument("--weights", default="auto", help="auto | tiny | PATH to a weights directory")
    parser.add_argument("--data-dir", type=Path, default=None, help="cache directory (default $LTX_DATA_DIR or ./data)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--image-crf", type=int, default=33,
        help="H.264 CRF of the start image's round trip, as the reference does; 0 disables (default 33)",
    )
    parser.add_argument("--keyframe", action="append", default=None, metavar="IMAGE:FRAME[:STRENGTH]",
                        help="extension: pin IMAGE (path or URL) to delivered FRAME (strength 0-1, default 1); "
                             "repeatable")
    parser.add_argument("--end-image", default=None, help="extension: image for the last frame (path or URL)")
    parser.add_argument("--end-image-strength", type=float, default=None, help="0-1 (default 1.0)")
    parser.add_argument("--lora-dir", type=Path, default=None, help="extension: directory of LoRA .safetensors files")
    parser.add_argument("--lora", action="append", default=None, metavar="NAME[:SCALE]",
                        help="extension: apply the LoRA NAME of --lora-dir at SCALE (default 1.0); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


@dataclass
class Job:
    """One validated job: where it came from, its request, and where its MP4 goes."""

    label: str
    request: VideoRequest
    image_source: str
    output: Path


def _image_uri(source: str) -> str:
    """Local paths become file: URIs in the request; URLs and data URIs pass through."""
    if source.lower().startswith(("http://", "https://", "data:", "file:")):
        return source
    return Path(source).expanduser().resolve().as_uri()


def _checked_uri(label: str, source: str) -> str:
    uri = _image_uri(source)
    if uri.startswith("file:") and not Path(uri[len("file://"):]).is_file():
        raise CommandError(f"{label}: cannot read image {source}: no such file")
    return uri


def _keyframe_flag(value: str) -> dict[str, Any]:
    """IMAGE:FRAME[:STRENGTH] -> a keyframe object (the image may itself hold ':', as a URL does)."""
    parts = value.rsplit(":", 2)
    try:
        if len(parts) == 3 and parts[1].isdigit():
            return {"image": parts[0], "frame_index": int(parts[1]), "strength": float(parts[2])}
        image, frame = value.rsplit(":", 1)
        return {"image": image, "frame_index": int(frame)}
    except ValueError:
        raise CommandError(f"--keyframe {value!r}: expected IMAGE:FRAME or IMAGE:FRAME:STRENGTH") from None


def _lora_flag(value: str) -> dict[str, Any]:
    """NAME[:SCALE] -> a LoRA choice."""
    name, sep, scale = value.partition(":")
    try:
        return {"name": name, "scale": float(scale)} if sep else {"name": name}
    except ValueError:
        raise CommandError(f"--lora {value!r}: expected NAME or NAME:SCALE") from None


def _build_job(label: str, fields: dict[str, Any], output: Path) -> Job:
    source = fields.get("input_image")
    if not isinstance(source, str) or not source:
        raise CommandError(f"{label}: input_image (--image) is required")
    uri = _image_uri(source)
    if uri.startswith("file:") and not Path(uri[len("file://"):]).is_file():
        raise CommandError(f"{label}: cannot read image {source}: no such file")
    fields = {**fields, "input_image": uri}
    for name in ("end_image",):
        if isinstance(fields.get(name), str):
            fields[name] = _checked_uri(label, fields[name])
    if isinstance(fields.get("keyframes"), list):
        fields["keyframes"] = [
            {**keyframe, "image": _checked_uri(label, keyframe["image"])}
            if isinstance(keyframe, dict) and isinstance(keyframe.get("image"), str) else keyframe
            for keyframe in fields["keyframes"]
        ]
    try:
        request = parse_request(fields)
    except RequestError as exc:
        raise CommandError(f"{label}: {exc}") from None
    return Job(label, request, source, output)


def _single_job(args: argparse.Namespace) -> list[Job]:
    if args.output is None:
        raise CommandError("-o/--output is required (or use --batch FILE --out-dir DIR)")
    if args.prompt is None:
        raise CommandError("--prompt is required")
    fields: dict[str, Any] = {"prompt": args.prompt, "input_image": args.image}
    for name, (flag, _) in PARAMETER_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            fields[name] = value
    if args.keyframe:
        fields["keyframes"] = [_keyframe_flag(value) for value in args.keyframe]
    if args.end_image is not None:
        fields["end_image"] = args.end_image
    if args.end_image_strength is not None:
        fields["end_image_strength"] = args.end_image_strength
    if args.lora:
        fields["loras"] = [_lora_flag(value) for value in args.lora]
    return [_build_job(str(args.output), fields, args.output)]


def _batch_jobs(args: argparse.Namespace) -> list[Job]:
    if args.out_dir is None:
        raise CommandError("--batch needs --out-dir")
    if args.image or args.prompt or args.output or args.keyframe or args.end_image:
        raise CommandError("--batch takes its requests from the file; drop --image/--prompt/-o/--keyframe/--end-image")
    try:
        lines = args.batch.read_text().splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read {args.batch}: {exc.strerror}") from None
    jobs, names = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        label = f"{args.batch.name} line {number}"
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CommandError(f"{label}: not valid JSON ({exc.msg})") from None
        if not isinstance(fields, dict):
            raise CommandError(f"{label}: expected a JSON object")
        name = fields.pop("output", None) or f"{len(jobs) + 1:04d}.mp4"
        if name in names or "/" in name:
            raise CommandError(f"{label}: output {name!r} is repeated or not a plain file name")
        names.add(name)
        jobs.append(_build_job(label, fields, args.out_dir / name))
    if not jobs:
        raise CommandError(f"{args.batch} holds no requests")
    return jobs


def _read_image(source: str) -> bytes:
    if source.lower().startswith(("http://", "https://", "data:")):
        # A local user may point at their own network; the server's SSRF rules do not apply here.
        return fetch_image_bytes(source, allow_private=True)
    path = Path(source[len("file://"):] if source.startswith("file://") else source).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    """Validate every job, load the model once, run the jobs in order; exit 1 if any failed."""
    jobs = _batch_jobs(args) if args.batch else _single_job(args)
    for job in jobs:  # LoRA names too are checked before the model loads
        try:
            check_loras(job.request, args.lora_dir)
        except LoraError as exc:
            raise CommandError(f"{job.label}: loras: {exc}") from None
    from pipeline.weights.locate import default_data_dir  # deferred: imports torch (the model loads next anyway)

    try:
        engine = Engine.load(EngineSpec(weights=args.weights, data_dir=args.data_dir or default_data_dir(),
                                        device=args.device, lora_dir=args.lora_dir))
    except WeightsError as exc:
        raise CommandError(str(exc)) from None
    if engine.info.notice:
        print(engine.info.notice, file=sys.stderr)
    failures, manifest = 0, []
    for job in jobs:
        started = time.perf_counter()
        try:
            image = _read_image(job.image_source)
            request = conditioning_request(job.request)
            keyframe_images = [_read_image(keyframe.image) for keyframe in request.keyframes]
            with _ProgressBar(job.label, args.no_progress) as on_progress:
                result = engine.generate(request, image, job.output, progress=on_progress,
                                         image_crf=args.image_crf or None, keyframe_images=keyframe_images)
        except (ValueError, Refused) as exc:
            failures += 1
            print(f"{job.label}: error: {exc}", file=sys.stderr)
            manifest.append({"output": job.output.name, "status": "failed", "error": str(exc)})
            continue
        elapsed = time.perf_counter() - started
        if result.enhanced_prompt is not None:
            print(f"{job.output}: enhanced prompt: {result.enhanced_prompt}")
        if result.enhance_note:
            print(f"{job.output}: {result.enhance_note}", file=sys.stderr)
        print(
            f"{job.output}: {result.width}x{result.height}, {result.num_frames} frames at {float(result.fps):g} fps, "
            f"seed {result.seed}, {elapsed:.1f} s"
        )
        manifest.append({
            "output": job.output.name, "status": "succeeded", "seed": result.seed,
            "width": result.width, "height": result.height, "num_frames": result.num_frames,
            "frames_per_second": float(result.fps), "seconds": round(elapsed, 3),
            **({"enhanced_prompt": result.enhanced_prompt} if result.enhanced_prompt is not None else {}),
        })
    if args.batch:
        (args.out_dir / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in manifest))
    return 1 if failures else 0


class _ProgressBar:
    """A tqdm bar over the job's overall fraction (0-1000), labelled with the current stage."""

    def __init__(self, label: str, disabled: bool):
        self.label, self.disabled = label, disabled

    def __enter__(self):
        from tqdm import tqdm  # deferred: only a run that shows a bar needs it

        self.bar = tqdm(total=1000, desc=self.label, disable=self.disabled, unit="‰", leave=False, file=sys.stderr)

        def update(progress) -> None:
            self.bar.set_postfix_str(f"{progress.stage} {progress.step}/{progress.total}")
            self.bar.update(int(progress.fraction * 1000) - self.bar.n)

        return update

    def __exit__(self, *exc) -> None:
        self.bar.close()
