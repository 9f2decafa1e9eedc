"""LoRA adapter files in a directory: what they are (layout, rank, targets), read from headers alone.

No torch: the API process lists the directory (`GET /api/ai/loras`) and admits jobs with it.
Applying them is `pipeline.generation.adapters`.

A LoRA is one `.safetensors` file; its name is the file name without the extension. Two layouts:

* **official** (Lightricks' LTX-2 / 2.3 LoRAs, ComfyUI's): `diffusion_model.<module>.lora_A.weight`
  (rank x in) and `.lora_B.weight` (out x rank), module names as in the official checkpoint.
  ltx-core fuses `W + (B * strength) @ A` for each transformer weight and ignores everything else
  (no alpha), so this layout is applied exactly that way.
* **diffusers / PEFT**: `transformer.<module>.lora_A.weight` (diffusers' `save_lora_weights`) or
  `base_model.model.<module>.lora_A.weight` (PEFT), module names as in diffusers' transformer. An
  `<module>.alpha` tensor or diffusers' `lora_adapter_metadata` (`lora_alpha`, `r`) scales the
  delta by alpha / rank, as PEFT does; without either, by 1.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LORA_EXTENSION = ".safetensors"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LAYOUT_PREFIXES = (("diffusion_model.", "official"), ("transformer.", "diffusers"), ("base_model.model.", "peft"))
PART_SUFFIXES = ((".lora_A.weight", "A"), (".lora_B.weight", "B"), (".alpha", "alpha"))
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit


class LoraFileError(ValueError):
    """A file that is not a usable LoRA; the message says why."""


@dataclass(frozen=True)
class LoraFile:
    """One LoRA of the directory, as listed and as admitted."""

    name: str
    path: Path
    size: int  # bytes on disk
    sha256: str
    rank: int  # the largest rank of its modules (usually all the same)
    layout: str  # official | diffusers | peft
    modules: int  # how many layers it adapts
    parameters: int  # elements of all its A and B matrices

    def device_bytes(self, bytes_per_element: int = 2) -> int:
        """Memory its matrices take on the GPU in the compute dtype (bfloat16: 2 bytes)."""
        return self.parameters * bytes_per_element

    def as_dict(self) -> dict[str, Any]:
        """The listing's row (no server path)."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "rank": self.rank,
                "layout": self.layout, "modules": self.modules}


def split_key(key: str) -> tuple[str, str, str] | None:
    """(layout, module name without prefix, part A | B | alpha) of one LoRA tensor name; None if not a LoRA part."""
    found = next(((suffix, part) for suffix, part in PART_SUFFIXES if key.endswith(suffix)), None)
    if found is None:
        return None
    stem, part = key[: -len(found[0])], found[1]
    for prefix, layout in LAYOUT_PREFIXES:
        if stem.startswith(prefix):
            return layout, stem[len(prefix):], part
    return "official", stem, part  # ltx-core strips `diffusion_model.` only when present


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensor infos by name, metadata) from a safetensors header; `LoraFileError` if it is not one."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise LoraFileError(f"{path.name}: not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER_BYTES:
                raise LoraFileError(f"{path.name}: not a safetensors file (header of {length} bytes)")
            header = json.loads(handle.read(length))
    except OSError as exc:
        raise LoraFileError(f"{path.name}: cannot be read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError):
        raise LoraFileError(f"{path.name}: not a safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise LoraFileError(f"{path.name}: not a safetensors file (bad header)")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata


def describe_lora(path: Path, sha256: str) -> LoraFile:
    """A LoRA file's row, from its header: layout, rank, modules. `LoraFileError` if it has no A/B pairs."""
    tensors, _ = read_header(path)
    pairs: dict[str, dict[str, list[int]]] = {}
    layouts = set()
    for key, info in tensors.items():
        split = split_key(key)
        if split is None or split[2] == "alpha":
            continue
        layout, module, part = split
        layouts.add(layout)
        pairs.setdefault(module, {})[part] = list(info.get("shape", []))
    complete = {m: p for m, p in pairs.items() if "A" in p and "B" in p}
    if not complete:
        raise LoraFileError(f"{path.name}: no lora_A / lora_B weight pairs (not a LoRA in a known layout)")
    if len(layouts) > 1:
        raise LoraFileError(f"{path.name}: mixes layouts ({', '.join(sorted(layouts))})")
    ranks, parameters = set(), 0
    for module, parts in complete.items():
        a, b = parts["A"], parts["B"]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise LoraFileError(f"{path.name}: {module} has lora_A {a} and lora_B {b}, which do not chain")
        ranks.add(a[0])
        parameters += a[0] * a[1] + b[0] * b[1]
    return LoraFile(path.stem, path, path.stat().st_size, sha256, max(ranks), layouts.pop(), len(complete), parameters)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) for the process: listing a directory twice hashes once."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    cached = _SHA_CACHE.get(key)
    if cached is None:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(2**22), b""):
                digest.update(block)
        cached = _SHA_CACHE[key] = digest.hexdigest()
    return cached


def lora_catalog(directory: Path | None) -> tuple[list[LoraFile], list[str]]:
    """(the directory's usable LoRAs by name, one sentence per file skipped and why). Empty without a directory."""
    if directory is None:
        return [], []
    directory = Path(directory)
    if not directory.is_dir():
        return [], [f"LoRA directory {directory} does not exist"]
    found, skipped = [], []
    for path in sorted(directory.iterdir()):
        if path.suffix != LORA_EXTENSION or not path.is_file():
            continue
        if not NAME_PATTERN.match(path.stem):
            skipped.append(f"{path.name}: the name must be letters, digits, '.', '_' or '-'")
            continue
        try:
            found.append(describe_lora(path, file_sha256(path)))
        except LoraFileError as exc:
            skipped.append(str(exc))
    return found, skipped


def find_lora(directory: Path | None, name: str) -> LoraFile:
    """The LoRA called `name` in the directory; `LoraFileError` naming what exists otherwise."""
    if directory is None:
        raise LoraFileError(f"LoRA {name!r} requested but this server has no LoRA directory (--lora-dir)")
    if not NAME_PATTERN.match(name):
        raise LoraFileError(f"LoRA name {name!r} is not a file name of the LoRA directory")
    path = Path(directory) / f"{name}{LORA_EXTENSION}"
    if not path.is_file():
        names = [lora.name for lora in lora_catalog(directory)[0]]
        known = ", ".join(names[:20]) if names else "none"
        raise LoraFileError(f"unknown LoRA {name!r} (available: {known})")
    return describe_lora(path, file_sha256(path))
