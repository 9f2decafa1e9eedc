"""weights.lock: pin, download and verify every file the real runtime loads.

The lock is JSON (readable, diff-able, written back by `weights lock` with the standard library):

    {
      "format": 1,
      "files": [                      # pinned files: what `pull` downloads and `verify` checks
        {"variant": "single-file", "repo": "owner/name", "revision": "<40-hex commit>",
         "file": "path/in/repo", "dir": "local/subfolder", "size": 123, "sha256": "<64-hex>",
         "model_version": "2.3-1.1"}
      ],
      "patterns": [                   # not yet pinned: `weights lock` expands them into files
        {"variant": "diffusers", "repo": "owner/name", "revision": null | "<commit>",
         "include": ["transformer/*", ...], "dir": "", "model_version": "2.3-1.0"}
      ]
    }

A file lands at `<weights dir>/<dir>/<file>` (where `hf_hub_download(local_dir=...)` would put
it); an unfinished download waits next to it as `<file>.part` and the next `pull` continues it.
`null` means "not known yet": `weights lock` (run where the hub is reachable) resolves revisions
to commits and fills sizes and sha256 from the hub API. `pull` refuses unpinned
entries, so what lands on disk is always what the lock names.

`variant` groups the files of one layout: `single-file` (the default: Lightricks' own release,
two official files) or `diffusers` (the diffusers folder layout, a conversion of release 1.0).
`model_version` (optional) is the LTX release a file belongs to, as "<model>-<release>"
("2.3-1.1"); files expanded from a pattern inherit it. The Gemma text encoder's entries carry
none: the same Gemma serves every release, so it is no part of one and never counts as a mix.
Locks written before the field existed read as "not recorded". `weights_version` refuses a
weights directory whose files belong to different releases, so they are never loaded together.

Hashing 46 GB takes minutes, so verified results are cached in `<weights dir>/.verified.json`
keyed by (path, size, mtime_ns): a file that was not touched since it was verified is not
re-hashed; any write changes its mtime and forces a new hash.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers
from tqdm.auto import tqdm

from pipeline.errors import WeightsError

LOCK_FORMAT = 1
LOCK_NAME = "weights.lock"  # also the name of the copy `pull` leaves in the weights directory
CACHE_NAME = ".verified.json"
PART_SUFFIX = ".part"  # an unfinished download, continued by the next `pull`
DEFAULT_VARIANT = "single-file"  # the official release; "diffusers" is the converted 1.0 layout
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
HASH_CHUNK = 16 * 1024 * 1024


class LockError(ValueError):
    """A lock file that cannot be used; the message says which entry and why."""


@dataclass(frozen=True)
class LockedFile:
    """One pinned file: where it comes from, where it goes and what it must be."""

    repo: str
    revision: str | None
    file: str
    dir: str = ""
    size: int | None = None
    sha256: str | None = None
    variant: str = DEFAULT_VARIANT
    model_version: str | None = None  # the LTX release, "2.3-1.1"; None: not part of one, or not recorded

    @property
    def target(self) -> str:
        """Path relative to the weights directory."""
        return f"{self.dir.strip('/')}/{self.file}" if self.dir.strip("/") else self.file

    @property
    def pinned(self) -> bool:
        return bool(
            self.revision and _COMMIT.match(self.revision) and self.size is not None
            and self.sha256 and _SHA256.match(self.sha256)
        )


@dataclass(frozen=True)
class LockedPattern:
    """Files of a repo not pinned yet: expanded into `LockedFile`s by `resolve_lock`."""

    repo: str
    revision: str | None
    include: tuple[str, ...]
    dir: str = ""
    variant: str = DEFAULT_VARIANT
    model_version: str | None = None  # inherited by the files the pattern expands into


@dataclass
class Lock:
    files: list[LockedFile] = field(default_factory=list)
    patterns: list[LockedPattern] = field(default_factory=list)

    def select(self, variant: str | None = DEFAULT_VARIANT) -> list[LockedFile]:
        """The files of one variant (all of them for `None`)."""
        return [f for f in self.files if variant is None or f.variant == variant]

    def variants(self) -> list[str]:
        return sorted({f.variant for f in self.files} | {p.variant for p in self.patterns})

    def to_json(self) -> str:
        data = {
            "format": LOCK_FORMAT,
            "files": [_entry_json(f) for f in self.files],
            "patterns": [{**_entry_json(p), "include": list(p.include)} for p in self.patterns],
        }
        return json.dumps(data, indent=2) + "\n"


def _entry_json(entry: LockedFile | LockedPattern) -> dict[str, Any]:
    data = asdict(entry)
    if data["model_version"] is None:  # not recorded: leave it out, as locks before the field did
        del data["model_version"]
    return data


def parse_lock(text: str, source: str = LOCK_NAME) -> Lock:
    """Parse and validate lock text; every problem names the entry it is in."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LockError(f"{source}: not valid JSON ({exc})") from exc
    if data.get("format") != LOCK_FORMAT:
        raise LockError(f"{source}: unsupported format {data.get('format')!r} (expected {LOCK_FORMAT})")
    files, targets = [], set()
    for i, raw in enumerate(data.get("files", [])):
        where = f"{source}: files[{i}]"
        try:
            entry = LockedFile(**raw)
        except TypeError as exc:
            raise LockError(f"{where}: {exc}") from exc
        if entry.revision is not None and not _COMMIT.match(entry.revision):
            raise LockError(f"{where}: revision {entry.revision!r} is not a 40-hex commit (branches drift)")
        if entry.sha256 is not None and not _SHA256.match(entry.sha256):
            raise LockError(f"{where}: sha256 {entry.sha256!r} is not 64 lowercase hex digits")
        if Path(entry.target).is_absolute() or ".." in Path(entry.target).parts:
            raise LockError(f"{where}: target {entry.target!r} escapes the weights directory")
        if entry.model_version is not None and not isinstance(entry.model_version, str):
            raise LockError(f"{where}: model_version {entry.model_version!r} is not a string")
        if (entry.variant, entry.target) in targets:
            raise LockError(f"{where}: {entry.target} is listed twice")
        targets.add((entry.variant, entry.target))
        files.append(entry)
    patterns = []
    for i, raw in enumerate(data.get("patterns", [])):
        try:
            pattern = LockedPattern(**{**raw, "include": tuple(raw.get("include", ()))})
        except TypeError as exc:
            raise LockError(f"{source}: patterns[{i}]: {exc}") from exc
        if pattern.model_version is not None and not isinstance(pattern.model_version, str):
            raise LockError(f"{source}: patterns[{i}]: model_version {pattern.model_version!r} is not a string")
        patterns.append(pattern)
    return Lock(files, patterns)


def read_lock(path: Path) -> Lock:
    path = Path(path)
    if not path.is_file():
        raise LockError(f"{path}: no such lock file")
    return parse_lock(path.read_text(), str(path))


def default_lock_path() -> Path:
    """`$LTX_WEIGHTS_LOCK`, else the `weights.lock` at the top of the source tree."""
    env = os.environ.get("LTX_WEIGHTS_LOCK")
    return Path(env) if env else Path(__file__).resolve().parents[2] / LOCK_NAME


# ---- hashing and verification --------------------------------------------------------------


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return h.hexdigest()


class HashCache:
    """sha256 of files keyed by (relative path, size, mtime_ns), stored next to the weights."""

    def __init__(self, root: Path):
        self.path = Path(root) / CACHE_NAME
        try:
            self._data: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._data = {}  # missing or damaged cache: just hash again
        self.hashed: list[str] = []  # files actually read this run (tests and logs use it)

    def sha256(self, rel: str, progress: Callable[[int], None] | None = None) -> str:
        full = self.path.parent / rel
        st = full.stat()
        hit = self._data.get(rel)
        if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            return str(hit["sha256"])
        digest = sha256_file(full, progress)
        self.hashed.append(rel)
        self._data[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        return digest

    def forget(self, rel: str) -> None:
        self._data.pop(rel, None)

    def save(self) -> None:
        try:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only weights volume: verification still works, only slower next time


@dataclass(frozen=True)
class Problem:
    target: str
    kind: str  # missing | size | sha256 | unpinned
    detail: str

    def __str__(self) -> str:
        return f"{self.target}: {self.detail}"


@dataclass
class VerifyReport:
    checked: list[str]
    problems: list[Problem]
    hashed: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self, root: Path) -> str:
        if self.ok:
            return f"{root}: {len(self.checked)} files match the lock"
        lines = [f"{root}: {len(self.problems)} of {len(self.checked)} files do not match the lock:"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def _tqdm_progress(total: int, desc: str):

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False, disable=total < 1 << 30)


def verify_files(root: Path, files: Iterable[LockedFile], show_progress: bool = False) -> VerifyReport:
    """Check each file's presence, size, then sha256 (cached); every mismatch is named."""
    root = Path(root)
    cache = HashCache(root)
    checked, problems = [], []
    for entry in files:
        rel = entry.target
        checked.append(rel)
        path = root / rel
        if not path.is_file():
            problems.append(Problem(rel, "missing", "missing"))
            continue
        size = path.stat().st_size
        if entry.size is not None and size != entry.size:
            why = "truncated" if size < entry.size else "too long"
            problems.append(Problem(rel, "size", f"size {size:,} bytes, lock says {entry.size:,} ({why})"))
            continue
        if not entry.sha256:
            problems.append(Problem(rel, "unpinned", "sha256 not pinned in the lock (run `ltx-server weights lock`)"))
            continue
        bar = _tqdm_progress(size, f"sha256 {rel}") if show_progress else None
        digest = cache.sha256(rel, bar.update if bar else None)
        if bar:
            bar.close()
        if digest != entry.sha256:
            cache.forget(rel)
            detail = f"sha256 {digest[:16]}… does not match the lock's {entry.sha256[:16]}…"
            problems.append(Problem(rel, "sha256", detail))
    cache.save()
    return VerifyReport(checked, problems, cache.hashed)


def verify_directory(root: Path, lock: Lock | None = None, variant: str | None = DEFAULT_VARIANT) -> VerifyReport:
    """Verify `root` against `lock`, or against the lock copy `pull` left in it."""
    lock = lock or read_lock(Path(root) / LOCK_NAME)
    return verify_files(root, lock.select(variant))


def require_verified(root: Path) -> VerifyReport | None:
    """Refuse to load a weights directory whose files do not match its lock, or mix releases.

    Directories without a `weights.lock` copy (the tiny model, hand-made layouts) are not
    hash-checked and give `None`; the release check (`weights_version`) applies to all.
    Raises `WeightsError` naming each bad file.
    """
    try:
        weights_version(root)
    except MixedVersionsError as exc:
        raise WeightsError(str(exc)) from exc
    if not (Path(root) / LOCK_NAME).is_file():
        return None
    lock = read_lock(Path(root) / LOCK_NAME)
    variant = DEFAULT_VARIANT if lock.select(DEFAULT_VARIANT) else None
    report = verify_directory(root, lock, variant)
    if not report.ok:
        raise WeightsError(report.message(Path(root)) + "\nRe-run `ltx-server weights pull` to repair.")
    return report


# ---- pulling ---------------------------------------------------------------------------------


@dataclass
class PullReport:
    downloaded: list[str]
    skipped: list[str]
    verify: VerifyReport


def _download(entry: LockedFile, root: Path, endpoint: str | None, token: str | None, force: bool) -> None:
    """Fetch one file into `<root>/<dir>/<file>`, continuing a `.part` left by an earlier run.

    Why not `hf_hub_download`: since huggingface_hub 1.x it deletes its partial file when a
    process dies, so a 46 GB download stopped at 99 % starts over. This uses the hub's own
    pieces instead (URL, auth headers with HF_TOKEN, the metadata HEAD, offline mode, and
    `http_get` with its progress bar and in-process Range retries) writing into
    `<target>.part`, which the next run continues with an HTTP Range request.
    """

    target = root / entry.target
    part = target.with_name(target.name + PART_SUFFIX)
    if force:
        part.unlink(missing_ok=True)
    url = hf_hub_url(entry.repo, entry.file, revision=entry.revision, endpoint=endpoint)
    meta = get_hf_file_metadata(url, token=token, endpoint=endpoint, retry_on_errors=True)
    size = meta.size if meta.size is not None else entry.size
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:  # not a prefix of this file: start over
        part.unlink()
        have = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "ab") as f:
        http_get(meta.location, f, resume_size=have, headers=build_hf_headers(token=token),
                 expected_size=size, displayed_filename=entry.target)
    os.replace(part, target)


def pull(
    lock: Lock,
    root: Path,
    variant: str = DEFAULT_VARIANT,
    endpoint: str | None = None,
    token: str | None = None,
    downloader: Callable[[LockedFile, Path, str | None, str | None, bool], None] = _download,
) -> PullReport:
    """Download every file of `variant` that is missing or wrong, then verify them all.

    Files that already verify are skipped (cheaply, thanks to the hash cache) and a file cut
    off mid-way continues from its `.part`, so an interrupted pull is resumed by running it
    again. A file that mismatches after its download is reported, never silently kept.
    """
    root = Path(root)
    files = lock.select(variant)
    pending = [p for p in lock.patterns if p.variant == variant]
    if not files and not pending:
        raise LockError(f"the lock has no files for variant {variant!r} (variants: {', '.join(lock.variants())})")
    unpinned = [f.target for f in files if not f.pinned]
    if unpinned or pending:
        names = unpinned + [f"{p.repo} ({len(p.include)} patterns)" for p in pending]
        raise LockError(
            f"{len(names)} entries are not pinned yet ({', '.join(names[:4])}{'…' if len(names) > 4 else ''}); "
            "run `ltx-server weights lock` where the hub is reachable"
        )
    root.mkdir(parents=True, exist_ok=True)
    before = verify_files(root, files)
    bad = {p.target for p in before.problems}
    downloaded = []
    for entry in files:
        if entry.target not in bad:
            continue
        target = root / entry.target
        force = target.exists()  # present but wrong: do not let the downloader trust it
        if force:
            target.unlink()
        _run_downloader(downloader, entry, root, endpoint, token, force)
        downloaded.append(entry.target)
    # Keep a copy of the lock with the weights: `verify` and the runtime check against it.
    (root / LOCK_NAME).write_text(Lock(files=files).to_json())
    after = verify_files(root, files)
    if not after.ok:
        raise WeightsError(after.message(root))
    return PullReport(downloaded, [f.target for f in files if f.target not in bad], after)


def _run_downloader(downloader, entry, root, endpoint, token, force) -> None:
    try:
        downloader(entry, root, endpoint, token, force)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise WeightsError(
            f"{entry.target}: not on disk and cannot be downloaded offline (HF_HUB_OFFLINE is set or the hub "
            f"is unreachable): {exc}"
        ) from exc
    except Exception as exc:  # GatedRepoError, HTTP errors...: one clear line naming the file
        hint = " (gated repo: accept its license on huggingface.co and set HF_TOKEN)" if "gated" in str(
            type(exc).__name__
        ).lower() or "401" in str(exc) or "403" in str(exc) else ""
        raise WeightsError(f"{entry.target}: download from {entry.repo} failed: {exc}{hint}") from exc


# ---- locking ---------------------------------------------------------------------------------


def lock_from_directory(
    root: Path, repo: str, revision: str, variant: str = DEFAULT_VARIANT, model_version: str | None = None
) -> Lock:
    """A fully pinned lock for every file under `root`, as if `root` were `repo` at `revision`."""
    root = Path(root)
    files = []
    for rel in _weights_files(root):
        size, digest = (root / rel).stat().st_size, sha256_file(root / rel)
        files.append(LockedFile(repo, revision, rel, "", size, digest, variant, model_version))
    return Lock(files=files)


def _weights_files(root: Path) -> list[str]:
    """Paths (relative, sorted) of the files under `root`, less the lock copy, caches and partial downloads."""
    found = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in (LOCK_NAME, CACHE_NAME) or rel.endswith(PART_SUFFIX) or ".cache" in Path(rel).parts:
            continue
        found.append(rel)
    return found


def resolve_lock(lock: Lock, endpoint: str | None = None, token: str | None = None, api: Any = None) -> Lock:
    """Pin everything the hub can tell: commits for revisions, files for patterns, size and sha256.

    Uses `HfApi.model_info(files_metadata=True)`: LFS files carry their sha256 there; small
    non-LFS files (configs, tokenizer JSON) are downloaded to a temporary folder and hashed.
    """
    api = api or HfApi(endpoint=endpoint, token=token)
    infos: dict[tuple[str, str | None], Any] = {}

    def info(repo: str, revision: str | None):
        key = (repo, revision)
        if key not in infos:
            infos[key] = api.model_info(repo, revision=revision or "main", files_metadata=True)
        return infos[key]

    def pin(entry: LockedFile, tmp: Path) -> LockedFile:
        meta = info(entry.repo, entry.revision)
        sibling = next((s for s in meta.siblings or [] if s.rfilename == entry.file), None)
        if sibling is None:
            raise LockError(f"{entry.repo}@{meta.sha}: has no file {entry.file}")
        size = sibling.lfs.size if sibling.lfs else sibling.size
        sha = sibling.lfs.sha256 if sibling.lfs else None
        if sha is None:
            local = hf_hub_download(entry.repo, entry.file, revision=meta.sha, local_dir=tmp, endpoint=endpoint,
                                    token=token)
            sha, size = sha256_file(Path(local)), Path(local).stat().st_size
        if entry.sha256 and entry.sha256 != sha:
            raise LockError(f"{entry.target}: the hub's sha256 {sha} differs from the lock's {entry.sha256}")
        return LockedFile(entry.repo, meta.sha, entry.file, entry.dir, size, sha, entry.variant, entry.model_version)

    files: list[LockedFile] = []
    with tempfile.TemporaryDirectory(prefix="ltx-lock-") as tmp:
        for entry in lock.files:
            files.append(entry if entry.pinned else pin(entry, Path(tmp)))
        known = {(f.variant, f.target) for f in files}
        for pattern in lock.patterns:
            meta = info(pattern.repo, pattern.revision)
            available = [s.rfilename for s in meta.siblings or []]
            names: list[str] = []
            for glob in pattern.include:
                matched = sorted(n for n in available if fnmatch.fnmatch(n, glob))
                if not matched:  # a missing component folder must fail here, not at load time
                    raise LockError(f"{pattern.repo}@{meta.sha}: no file matches {glob!r}")
                names += [n for n in matched if n not in names]
            for name in names:
                entry = LockedFile(pattern.repo, meta.sha, name, pattern.dir, None, None, pattern.variant,
                                   pattern.model_version)
                if (entry.variant, entry.target) not in known:
                    files.append(pin(entry, Path(tmp)))
                    known.add((entry.variant, entry.target))
    return Lock(files=files)


# ---- model versions --------------------------------------------------------------------------

# Lightricks' file names carry their release ("...-1.1.safetensors"); the first release
# published its checkpoint as plain `ltx-2.3-22b-distilled.safetensors` (its upscaler as -1.0).
# The safetensors metadata does not tell releases apart: its `model_version` is the
# architecture's ("2.3.0"), which the loader checks separately.
_RELEASE_NAMES = (
    re.compile(r"ltx-2\.3-22b-distilled(?:-(?P<release>\d+\.\d+))?\.safetensors"),
    re.compile(r"ltx-2\.3-spatial-upscaler-x2(?:-(?P<release>\d+\.\d+))?\.safetensors"),
)
FIRST_RELEASE = "1.0"


class MixedVersionsError(ValueError):
    """A weights directory holding files of different model versions; the message names them."""


def release_of_name(name: str) -> str | None:
    """The model version an official LTX-2.3 file name carries ("2.3-1.1"), None for any other name."""
    for pattern in _RELEASE_NAMES:
        match = pattern.fullmatch(name)
        if match:
            return f"2.3-{match['release'] or FIRST_RELEASE}"
    return None


def file_versions(root: Path, lock: Lock | None = None) -> dict[str, str]:
    """{path relative to `root`: model version} for each file in `root` whose version is known.

    In order of precedence: an official file name (`release_of_name`); the `model_version` of
    the entry that pins the file, in `lock` or in the copy `pull` left in `root`; and, for a
    diffusers layout pinned only by pattern, that of the pattern whose `include` matches it.
    Patterns are not applied to the smoke-test model (its index says so): it has the layout
    but belongs to no release. Gemma's files have no version (see the module docstring).
    """
    root = Path(root)
    locks = [lock] if lock is not None else []
    try:
        if (root / LOCK_NAME).is_file():
            locks.append(read_lock(root / LOCK_NAME))
    except LockError:
        pass  # a damaged copy: `require_verified` reports it; versions come from elsewhere
    pinned = {f.target: f.model_version for lk in locks for f in lk.files if f.model_version}
    patterns = [p for lk in locks for p in lk.patterns if p.model_version] if not _is_smoke_test(root) else []
    versions: dict[str, str] = {}
    for rel in _weights_files(root):
        version = release_of_name(Path(rel).name) if "/" not in rel else None
        version = version or pinned.get(rel) or next((p.model_version for p in patterns if _matches(p, rel)), None)
        if version:
            versions[rel] = version
    return versions


def _matches(pattern: LockedPattern, rel: str) -> bool:
    prefix = pattern.dir.strip("/")
    if prefix:
        if not rel.startswith(prefix + "/"):
            return False
        rel = rel[len(prefix) + 1:]
    return any(fnmatch.fnmatch(rel, glob) for glob in pattern.include)


def _is_smoke_test(root: Path) -> bool:
    try:
        return bool(json.loads((root / "model_index.json").read_text()).get("smoke_test"))
    except (OSError, ValueError, AttributeError):
        return False


def weights_version(root: Path, lock: Lock | None = None) -> str | None:
    """The one model version of the files in `root` ("2.3-1.1"), or None when none records one.

    `lock` defaults to the repository's lock (`default_lock_path()`), whose patterns know the
    diffusers layout's release. Raises `MixedVersionsError` naming the files of each version
    when they differ: components of different releases are never silently loaded together.
    """
    if lock is None:
        try:
            lock = read_lock(default_lock_path())
        except LockError:
            lock = None  # no lock shipped (an unusual install): names and the copy still tell
    versions = file_versions(root, lock)
    found = sorted(set(versions.values()))
    if len(found) > 1:
        groups = "; ".join(f"{v}: {_summary([rel for rel, x in versions.items() if x == v])}" for v in found)
        raise MixedVersionsError(
            f"{root} mixes model versions ({groups}). Components of different releases must not be loaded "
            "together: remove the files of the version you do not want, or keep each version in its own directory."
        )
    return found[0] if found else None


def _summary(rels: list[str]) -> str:
    """File names at the top, one "folder/ (N files)" per folder below it."""
    folders: dict[str, int] = {}
    names = []
    for rel in rels:
        if "/" in rel:
            top = rel.split("/", 1)[0] + "/"
            folders[top] = folders.get(top, 0) + 1
        else:
            names.append(rel)
    return ", ".join(names + [f"{top} ({n} file{'s' if n > 1 else ''})" for top, n in folders.items()])
