"""`ltx-server weights lock|pull|verify|check|plan`: the real weights, pinned, fetched and checked.

    weights lock   [--lock FILE]                     resolve unknown revisions/hashes with the hub API
    weights pull   [--lock FILE] [--dir DIR]          download what the lock names, then verify
    weights verify [--lock FILE] [--dir DIR]          size + sha256 of every file (cached by mtime), one release
    weights check  [DIR] [--against real|own]         safetensors headers vs the architecture
    weights plan   [--vram-gb N [--ram-gb M]] [--plan NAME]   the memory plan and its estimates

`--variant` picks the files of the lock: `single-file` (default, Lightricks' release 1.1) or
`diffusers` (the diffusers folder layout, converted from release 1.0). HF_TOKEN (the Gemma repo
is gated), HF_HUB_OFFLINE and HF_ENDPOINT are honoured by huggingface_hub itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipeline.engine import gpu_plans, memory_plan
from pipeline.errors import WeightsError
from pipeline.weights.lock import (
    DEFAULT_VARIANT,
    Lock,
    LockError,
    MixedVersionsError,
    default_lock_path,
    pull,
    read_lock,
    resolve_lock,
    verify_files,
    weights_version,
)
from server.core.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `weights` sub-command and its actions."""
    parser = subparsers.add_parser(
        "weights",
        help="pin, download, verify and check the real model weights",
        description="Manage the LTX-2.3 weights named by weights.lock.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, with_dir: bool = True) -> None:
        p.add_argument("--lock", type=Path, default=None, help="lock file (default $LTX_WEIGHTS_LOCK, ./weights.lock)")
        p.add_argument("--variant", default=DEFAULT_VARIANT,
                       help=f"which files of the lock: single-file or diffusers (default {DEFAULT_VARIANT})")
        if with_dir:
            p.add_argument("--dir", type=Path, default=None, help="weights directory (default $LTX_WEIGHTS_DIR)")

    p = actions.add_parser("lock", help="resolve unknown revisions, sizes and sha256 with the hub API")
    common(p, with_dir=False)
    p.add_argument("--output", type=Path, default=None, help="write here instead of over the lock")
    p.set_defaults(handler=_lock)

    p = actions.add_parser("pull", help="download the locked files (resumable), then verify them")
    common(p)
    p.set_defaults(handler=_pull)

    p = actions.add_parser("verify", help="check size and sha256 of every locked file")
    common(p)
    p.set_defaults(handler=_verify)

    p = actions.add_parser("check", help="compare safetensors headers with the architecture (no data read)")
    p.add_argument("path", nargs="?", type=Path, default=None,
                   help="weights directory or official .safetensors file (default $LTX_WEIGHTS_DIR)")
    p.add_argument("--against", choices=("real", "own"), default=None,
                   help="real: the LTX-2.3 configs; own: each folder's config.json (default: own for the tiny model)")
    p.set_defaults(handler=_check)

    p = actions.add_parser("plan", help="show the memory plan for this GPU (or --vram-gb) and its estimates")
    p.add_argument("--vram-gb", type=float, default=None, help="GPU memory in GiB (default: the visible GPU)")
    p.add_argument("--ram-gb", type=float, default=None,
                   help="with --vram-gb: the host RAM in GiB each such GPU's worker may use (the host's RAM "
                        "over its GPUs); the offloading plans keep weights there (default: not checked)")
    p.add_argument("--plan", default="auto", help="auto | resident | encoder-offload | fp8 | offload")
    p.add_argument("--gpus-per-job", type=int, default=1, help="plan each GPU of a group that splits every job N ways")
    p.set_defaults(handler=_plan)


def _weights_dir(path: Path | None) -> Path:
    # deferred: pipeline.weights.locate imports torch; `ltx-server serve` registers this module too
    from pipeline.weights.locate import default_weights_dir

    return (path or default_weights_dir()).resolve()


def _read_lock(path: Path | None):
    try:
        return read_lock(path or default_lock_path())
    except LockError as exc:
        raise CommandError(str(exc)) from exc


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None  # None: huggingface_hub falls back to `hf auth login`


def _endpoint() -> str | None:
    # huggingface_hub reads HF_ENDPOINT once at import; read it at call time too (mirrors, tests).
    return os.environ.get("HF_ENDPOINT") or None


def _lock(args: argparse.Namespace) -> int:
    source = args.lock or default_lock_path()
    lock = _read_lock(source)
    try:
        resolved = resolve_lock(lock, endpoint=_endpoint(), token=_token())
    except LockError as exc:
        raise CommandError(str(exc)) from exc
    except Exception as exc:  # network, auth: one line
        raise CommandError(f"cannot reach the hub to resolve the lock: {exc}") from exc
    target = args.output or source
    target.write_text(resolved.to_json())
    print(f"{target}: {len(resolved.files)} files pinned ({', '.join(resolved.variants())})")
    return 0


def _pull(args: argparse.Namespace) -> int:
    root = _weights_dir(args.dir)
    lock = _read_lock(args.lock)
    try:
        report = pull(lock, root, variant=args.variant, endpoint=_endpoint(), token=_token())
    except (LockError, WeightsError) as exc:
        raise CommandError(str(exc)) from exc
    print(f"{root}: {len(report.downloaded)} downloaded, {len(report.skipped)} already present; "
          f"{len(report.verify.checked)} files verified")
    return _report_version(root, lock)


def _verify(args: argparse.Namespace) -> int:
    root = _weights_dir(args.dir)
    lock = _read_lock(args.lock)
    files = lock.select(args.variant)
    if not files:
        raise CommandError(f"the lock pins no files for variant {args.variant!r}; run `ltx-server weights lock`")
    report = verify_files(root, files, show_progress=sys.stderr.isatty())
    print(report.message(root))
    versions = _report_version(root, lock)
    return 0 if report.ok and versions == 0 else 1


def _report_version(root: Path, lock: Lock) -> int:
    """Print the model version the directory holds; 1 (and why) when its files mix releases."""
    try:
        version = weights_version(root, lock)
    except MixedVersionsError as exc:
        print(f"ltx-server weights: error: {exc}", file=sys.stderr)
        return 1
    print(f"{root}: model version {version or 'not recorded (no file in it names its release)'}")
    return 0


def _check(args: argparse.Namespace) -> int:
    # deferred: both import torch; `ltx-server serve` registers this module too
    from pipeline.weights.inspect import check_directory
    from pipeline.weights.single_file import check_single_file, find_single_file  # deferred: as above

    root = _weights_dir(args.path)
    if root.is_file():  # an official single-file checkpoint on its own
        report = check_single_file(root)
    elif not root.is_dir():
        raise CommandError(f"{root} is not a weights directory or a .safetensors file")
    elif (found := find_single_file(root)) is not None and not (root / "model_index.json").is_file():
        report = check_single_file(*found)
    else:
        report = check_directory(root, args.against)
    print(report.text())
    return 0 if report.ok else 1


def _plan(args: argparse.Namespace) -> int:
    try:
        if args.ram_gb is not None and not args.vram_gb:
            raise CommandError("--ram-gb goes with --vram-gb (for the visible GPUs, this host's RAM is read)")
        if args.vram_gb:
            host = None if args.ram_gb is None else int(args.ram_gb * 2**30)
            chosen = memory_plan(args.plan, int(args.vram_gb * 2**30), host_ram_bytes=host, ranks=args.gpus_per_job)
        else:
            visible = gpu_plans(args.plan, args.gpus_per_job)
            if not visible:
                raise CommandError("no GPU is visible: pass --vram-gb N to plan for a card")
            chosen = visible[0]
    except ValueError as exc:  # an unknown plan, or one that cannot fit the card
        raise CommandError(str(exc)) from exc
    print(chosen.summary)
    return 0
