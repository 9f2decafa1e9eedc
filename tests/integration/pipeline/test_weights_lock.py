"""weights.lock: pull / verify / lock against a local stand-in for the Hugging Face hub.

The stand-in is an HTTP server on 127.0.0.1 that serves the hub's `resolve` URLs (HEAD and
ranged GET, with the `X-Repo-Commit` and `ETag` headers `hf_hub_download` reads) and the
`/api/models/.../revision/...` listing `HfApi.model_info` reads, from a directory holding the
tiny model. So `pull` runs the real download path: huggingface_hub, HTTP, resume, progress.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.errors import WeightsError
from pipeline.weights.lock import (
    CACHE_NAME,
    DEFAULT_VARIANT,
    LOCK_NAME,
    Lock,
    LockedFile,
    LockedPattern,
    LockError,
    MixedVersionsError,
    default_lock_path,
    lock_from_directory,
    parse_lock,
    pull,
    read_lock,
    release_of_name,
    require_verified,
    resolve_lock,
    verify_directory,
    verify_files,
    weights_version,
)
from pipeline.weights.tiny import build_tiny_model
from repo_paths import REPO as REPO_ROOT

REPO = "test-org/tiny-ltx"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.drop_once: set[str] = set()  # files whose first GET breaks off half-way
        self.fail: set[str] = set()  # files that always answer 500
        self.fail_ranges: set[str] = set()  # files whose ranged GETs answer 500 (a hub gone away)
        self.gets: list[tuple[str, str | None]] = []  # (file, Range header)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _resolve(self) -> Path | None:
        prefix = f"/{REPO}/resolve/{COMMIT}/"
        if not self.path.startswith(prefix):
            return None
        path = self.server.root / self.path[len(prefix):]
        return path if path.is_file() else None

    def _head(self, path: Path, length: int, status: int = 200, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{hashlib.sha256(path.read_bytes()).hexdigest()}"')
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()

    def _not_found(self) -> None:
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        path = self._resolve()
        if path is None:
            return self._not_found()
        self._head(path, path.stat().st_size)

    def do_GET(self) -> None:
        if self.path.startswith(f"/api/models/{REPO}/revision/"):
            return self._api()
        path = self._resolve()
        if path is None:
            return self._not_found()
        rel = path.relative_to(self.server.root).as_posix()
        rng = self.headers.get("Range")
        self.server.gets.append((rel, rng))
        if rel in self.server.fail or (rng and rel in self.server.fail_ranges):
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        if rng:
            extra = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            self._head(path, len(body), 206, extra)
        else:
            self._head(path, len(body))
        if rel in self.server.drop_once and not rng:
            self.server.drop_once.discard(rel)
            self.wfile.write(body[: len(body) // 2])  # then hang up mid-body
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _api(self) -> None:
        siblings = []
        for path in sorted(p for p in self.server.root.rglob("*") if p.is_file()):
            rel = path.relative_to(self.server.root).as_posix()
            sibling = {"rfilename": rel, "size": path.stat().st_size}
            if rel.endswith(".safetensors"):  # like the hub: LFS files carry their sha256
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                sibling["lfs"] = {"size": path.stat().st_size, "sha256": digest, "pointerSize": 134}
            siblings.append(sibling)
        body = json.dumps({"id": REPO, "sha": COMMIT, "siblings": siblings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("hub") / "tiny")


@pytest.fixture
def hub(tiny_repo):
    server = FakeHub(tiny_repo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tiny_lock(tiny_repo) -> Lock:
    return lock_from_directory(tiny_repo, REPO, COMMIT, variant="diffusers")  # the tiny model has that layout


def _biggest(lock: Lock) -> LockedFile:
    return max(lock.files, key=lambda f: f.size or 0)


def test_repo_lock_parses_and_pins_known_files():
    lock = read_lock(REPO_ROOT / LOCK_NAME)
    single = {f.file: f for f in lock.select("single-file")}
    distilled = single["ltx-2.3-22b-distilled-1.1.safetensors"]
    assert distilled.pinned and distilled.size == 46_149_345_334
    assert distilled.sha256.startswith("b33b7fe4")
    # What is not known here stays explicitly unknown, to be resolved by `weights lock`.
    unresolved = [p for p in lock.patterns if p.variant == "diffusers"]
    assert any(p.repo == "diffusers/LTX-2.3-Distilled-Diffusers" and p.revision is None for p in unresolved)
    with pytest.raises(LockError, match="not pinned"):
        pull(lock, Path("/nonexistent"), variant="diffusers")


def test_the_official_release_is_the_default_and_the_lock_records_versions():
    lock = read_lock(REPO_ROOT / LOCK_NAME)
    assert DEFAULT_VARIANT == "single-file"
    assert {f.file: f.model_version for f in lock.select()} == {
        "ltx-2.3-22b-distilled-1.1.safetensors": "2.3-1.1",
        "ltx-2.3-spatial-upscaler-x2-1.1.safetensors": "2.3-1.1",
    }
    converted = next(p for p in lock.patterns if p.repo == "diffusers/LTX-2.3-Distilled-Diffusers")
    assert (converted.variant, converted.model_version) == ("diffusers", "2.3-1.0")
    # Gemma is the text encoder of every release: no version, in either variant.
    gemma = [p for p in lock.patterns if p.repo.startswith("google/gemma-3")]
    assert {p.variant for p in gemma} == {"single-file", "diffusers"} and all(p.model_version is None for p in gemma)


def test_model_version_round_trips_and_old_locks_still_read():
    entry = {"repo": "a/b", "revision": COMMIT, "file": "x", "size": 1, "sha256": "0" * 64}
    old = json.dumps({"format": 1, "files": [entry], "patterns": [{"repo": "a/b", "revision": None, "include": ["*"]}]})
    lock = parse_lock(old)
    assert lock.files[0].model_version is None and lock.patterns[0].model_version is None
    assert "model_version" not in lock.to_json()  # not recorded: written back as it was
    versioned = Lock(files=[LockedFile(**entry, model_version="2.3-1.1")],
                     patterns=[LockedPattern("a/b", None, ("*",), model_version="2.3-1.0")])
    again = parse_lock(versioned.to_json())
    assert again.files == versioned.files and again.patterns == versioned.patterns
    with pytest.raises(LockError, match="model_version"):
        parse_lock(json.dumps({"format": 1, "files": [{**entry, "model_version": 1.1}]}))


def _touch(root: Path, *rels: str) -> Path:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return root


CKPT_11, UP_11 = "ltx-2.3-22b-distilled-1.1.safetensors", "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"
GEMMA = ("text_encoder/model-00001-of-00005.safetensors", "tokenizer/tokenizer.json")


def test_release_names():
    assert release_of_name(CKPT_11) == "2.3-1.1" and release_of_name(UP_11) == "2.3-1.1"
    assert release_of_name("ltx-2.3-spatial-upscaler-x2-1.0.safetensors") == "2.3-1.0"
    assert release_of_name("ltx-2.3-22b-distilled.safetensors") == "2.3-1.0"  # the first release had no suffix
    for other in ("ltx-2.3-22b-distilled-lora-384-1.1.safetensors", "ltx-2.3-22b-dev.safetensors", "config.json"):
        assert release_of_name(other) is None, other


def test_weights_version_of_a_directory(tmp_path, tiny_repo):
    lock = read_lock(default_lock_path())
    official = _touch(tmp_path / "official", CKPT_11, UP_11, *GEMMA)
    assert weights_version(official, lock) == "2.3-1.1"
    # The 1.0 diffusers folders (known by the lock's pattern) next to the 1.1 single files.
    converted = _touch(tmp_path / "converted", "model_index.json", "transformer/diffusion_pytorch_model.safetensors",
                       "vae/config.json", *GEMMA)
    assert weights_version(converted, lock) == "2.3-1.0"
    _touch(converted, CKPT_11, UP_11)
    with pytest.raises(MixedVersionsError) as mixed:
        weights_version(converted, lock)
    assert str(mixed.value).startswith(f"{converted} mixes model versions (2.3-1.0: model_index.json, transformer/ "
                                       f"(1 file), vae/ (1 file); 2.3-1.1: {CKPT_11}, {UP_11})")
    # A 1.0 checkpoint with a 1.1 upscaler.
    old = _touch(tmp_path / "old", "ltx-2.3-22b-distilled.safetensors", UP_11)
    with pytest.raises(MixedVersionsError, match=r"2\.3-1\.0: ltx-2\.3-22b-distilled\.safetensors; 2\.3-1\.1"):
        weights_version(old, lock)
    # The smoke-test model has the diffusers layout but belongs to no release; Gemma alone has none either.
    assert weights_version(tiny_repo, lock) is None
    assert weights_version(_touch(tmp_path / "gemma", *GEMMA), lock) is None
    # The copy of the lock `pull` leaves names the release of what it pulled.
    pulled = _touch(tmp_path / "pulled", "weights/a.safetensors")
    (pulled / LOCK_NAME).write_text(Lock(files=[LockedFile("a/b", COMMIT, "a.safetensors", "weights", 1, "0" * 64,
                                                           "diffusers", "2.3-1.0")]).to_json())
    assert weights_version(pulled, Lock()) == "2.3-1.0"


def test_the_runtime_refuses_mixed_versions_and_names_the_release_it_loads(tmp_path):
    from pipeline.weights.locate import resolve_weights

    official = _touch(tmp_path / "official", CKPT_11, UP_11)
    choice = resolve_weights(str(official), tmp_path / "data", device="cpu")
    assert (choice.version, choice.version_text, choice.smoke_test) == ("2.3-1.1", "model version 2.3-1.1", False)
    _touch(official, "ltx-2.3-22b-distilled.safetensors")  # a 1.0 checkpoint left behind
    with pytest.raises(WeightsError, match="mixes model versions"):
        resolve_weights(str(official), tmp_path / "data", device="cpu")
    with pytest.raises(WeightsError, match="mixes model versions"):
        require_verified(official)


def test_lock_rejects_branches_and_escaping_paths():
    good = {"repo": "a/b", "revision": COMMIT, "file": "x", "size": 1, "sha256": "0" * 64}
    with pytest.raises(LockError, match="40-hex commit"):
        parse_lock(json.dumps({"format": 1, "files": [{**good, "revision": "main"}]}))
    with pytest.raises(LockError, match="escapes"):
        parse_lock(json.dumps({"format": 1, "files": [{**good, "file": "../../etc/passwd"}]}))
    text = Lock(files=[LockedFile(**good)]).to_json()
    assert parse_lock(text).files == [LockedFile(**good)]


def test_pull_downloads_then_verifies(hub, tiny_lock, tiny_repo, tmp_path):
    dest = tmp_path / "weights"
    report = pull(tiny_lock, dest, variant="diffusers", endpoint=hub.endpoint)
    assert sorted(report.downloaded) == sorted(f.target for f in tiny_lock.files)
    assert report.verify.ok
    for entry in tiny_lock.files:
        assert (dest / entry.target).read_bytes() == (tiny_repo / entry.target).read_bytes()
    assert (dest / LOCK_NAME).is_file() and (dest / CACHE_NAME).is_file()
    # The pulled directory loads like any weights directory, and the runtime's check passes.
    assert require_verified(dest).ok
    # A second pull has nothing to do and, thanks to the cache, hashes nothing.
    hub.gets.clear()
    again = pull(tiny_lock, dest, variant="diffusers", endpoint=hub.endpoint)
    assert again.downloaded == [] and hub.gets == []
    assert again.verify.hashed == []


def test_verify_names_corrupted_missing_and_truncated_files(hub, tiny_lock, tmp_path):
    dest = tmp_path / "weights"
    pull(tiny_lock, dest, variant="diffusers", endpoint=hub.endpoint)
    files = sorted(tiny_lock.files, key=lambda f: f.size or 0, reverse=True)
    corrupted, truncated, missing = files[0], files[1], files[2]
    # One flipped byte, same size: only the hash can tell, so the cache must not hide it.
    path = dest / corrupted.target
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    t = dest / truncated.target
    t.write_bytes(t.read_bytes()[:-10])
    (dest / missing.target).unlink()

    report = verify_directory(dest, variant="diffusers")
    kinds = {p.target: p.kind for p in report.problems}
    assert kinds == {corrupted.target: "sha256", truncated.target: "size", missing.target: "missing"}
    message = report.message(dest)
    for entry in (corrupted, truncated, missing):
        assert entry.target in message
    assert "truncated" in message
    # The runtime refuses to load it, with the same message.
    with pytest.raises(WeightsError, match="do not match the lock"):
        require_verified(dest)
    # pull repairs exactly the three bad files.
    report = pull(tiny_lock, dest, variant="diffusers", endpoint=hub.endpoint)
    assert sorted(report.downloaded) == sorted(e.target for e in (corrupted, truncated, missing))
    assert verify_directory(dest, variant="diffusers").ok


def test_interrupted_download_resumes_with_a_range_request(hub, tiny_lock, tiny_repo, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    # huggingface_hub counts progress per 10 MB chunk; the tiny files are smaller than one,
    # so use 64 KiB chunks to make the half-file received before the hang-up count.
    monkeypatch.setattr(hub_constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    big = _biggest(tiny_lock)
    hub.drop_once.add(big.target)
    dest = tmp_path / "weights"
    pull(tiny_lock, dest, variant="diffusers", endpoint=hub.endpoint)
    ranges = [rng for rel, rng in hub.gets if rel == big.target]
    assert ranges[0] is None and ranges[1] is not None and ranges[1] != "bytes=0-"
    assert (dest / big.target).read_bytes() == (tiny_repo / big.target).read_bytes()


def test_a_pull_killed_mid_file_continues_from_the_part_file(hub, tiny_lock, tiny_repo, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    big = _biggest(tiny_lock)
    hub.drop_once.add(big.target)  # the connection breaks half-way...
    hub.fail_ranges.add(big.target)  # ...and the hub is gone when the client retries: the run fails
    dest = tmp_path / "weights"
    with pytest.raises(WeightsError, match=big.target.replace(".", r"\.")):
        pull(tiny_lock, dest, variant="diffusers", endpoint=hub.endpoint)
    part = dest / (big.target + ".part")
    kept = part.stat().st_size
    assert 0 < kept < big.size and not (dest / big.target).exists()
    # A new run (a new process, as far as the download is concerned) asks only for the rest.
    hub.fail_ranges.clear()
    hub.gets.clear()
    report = pull(tiny_lock, dest, variant="diffusers", endpoint=hub.endpoint)
    assert report.downloaded == [big.target]
    assert [rng for rel, rng in hub.gets if rel == big.target] == [f"bytes={kept}-"]
    assert (dest / big.target).read_bytes() == (tiny_repo / big.target).read_bytes()
    assert not part.exists()


def test_failed_pull_keeps_finished_files_and_continues(hub, tiny_lock, tmp_path):
    big = _biggest(tiny_lock)
    hub.fail.add(big.target)
    dest = tmp_path / "weights"
    with pytest.raises(WeightsError, match=big.target.replace(".", r"\.")):
        pull(tiny_lock, dest, variant="diffusers", endpoint=hub.endpoint)
    hub.fail.clear()
    hub.gets.clear()
    report = pull(tiny_lock, dest, variant="diffusers", endpoint=hub.endpoint)
    # Files finished before the failure are verified from disk, not fetched again.
    assert big.target in report.downloaded
    assert len(report.downloaded) < len(tiny_lock.files)
    assert verify_directory(dest, variant="diffusers").ok


def test_offline_pull_names_the_missing_file(hub, tiny_lock, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError, match="offline"):
        pull(tiny_lock, tmp_path / "weights", variant="diffusers", endpoint=hub.endpoint)


def test_hash_cache_skips_unchanged_files_and_rehashes_touched_ones(tiny_repo, tiny_lock, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(tiny_repo, dest)
    first = verify_files(dest, tiny_lock.files)
    assert first.ok and len(first.hashed) == len(tiny_lock.files)
    assert verify_files(dest, tiny_lock.files).hashed == []
    big = dest / _biggest(tiny_lock).target
    big.write_bytes(big.read_bytes())  # same content, new mtime
    assert verify_files(dest, tiny_lock.files).hashed == [_biggest(tiny_lock).target]


def test_lock_resolves_patterns_with_the_hub_api(hub, tiny_lock):
    unpinned = Lock(
        files=[LockedFile(REPO, None, "model_index.json", model_version="2.3-1.0")],
        patterns=[LockedPattern(REPO, None, ("transformer/*", "vae/*"), "", "diffusers", "2.3-1.0")],
    )
    resolved = resolve_lock(unpinned, endpoint=hub.endpoint, token=False)
    expected = {f.target: f for f in tiny_lock.files}
    assert all(f.pinned for f in resolved.files)
    # The release recorded for a pattern (or a file) stays with every file it resolves to.
    assert {(f.variant, f.model_version) for f in resolved.files if f.target != "model_index.json"} == {
        ("diffusers", "2.3-1.0")}
    assert next(f for f in resolved.files if f.target == "model_index.json").model_version == "2.3-1.0"
    got = {f.target for f in resolved.files}
    assert "model_index.json" in got and any(t.startswith("transformer/") for t in got)
    for entry in resolved.files:
        assert (entry.size, entry.sha256, entry.revision) == (
            expected[entry.target].size, expected[entry.target].sha256, COMMIT,
        )
    with pytest.raises(LockError, match="no file matches"):
        resolve_lock(Lock(patterns=[LockedPattern(REPO, None, ("nope/*",))]), endpoint=hub.endpoint, token=False)


def test_cli_pull_verify_and_errors(hub, tiny_lock, tmp_path, monkeypatch, capsys):
    from server.entrypoints.cli import main

    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    lock_file = tmp_path / "tiny.lock"
    lock_file.write_text(tiny_lock.to_json())
    dest = tmp_path / "weights"
    tiny = ["--lock", str(lock_file), "--dir", str(dest), "--variant", "diffusers"]
    assert main(["weights", "pull", *tiny]) == 0
    assert f"{len(tiny_lock.files)} downloaded" in capsys.readouterr().out
    assert main(["weights", "verify", *tiny]) == 0
    victim = dest / _biggest(tiny_lock).target
    victim.write_bytes(victim.read_bytes()[:100])
    assert main(["weights", "verify", *tiny]) == 1
    assert f"{_biggest(tiny_lock).target}: size 100 bytes" in capsys.readouterr().out
    # User errors: one line on stderr, exit status 2.
    assert main(["weights", "pull", "--lock", str(tmp_path / "nope.lock"), "--dir", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ltx-server weights: error:") and "no such lock file" in err and "\n" not in err


@pytest.fixture
def release_hub(tmp_path):
    """A hub repo holding both layouts: the 1.1 single files and a 1.0 diffusers transformer folder."""
    import dataclasses
    import os

    root = tmp_path / "hub-release"
    for rel in (CKPT_11, UP_11, "transformer/diffusion_pytorch_model.safetensors", "transformer/config.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(50_000))
    lock = Lock(files=[
        dataclasses.replace(f, variant="diffusers", model_version="2.3-1.0") if "/" in f.target
        else dataclasses.replace(f, variant="single-file", model_version="2.3-1.1")
        for f in lock_from_directory(root, REPO, COMMIT).files
    ])
    server = FakeHub(root)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, lock
    server.shutdown()
    server.server_close()


def test_cli_pulls_the_official_release_by_default_and_refuses_to_mix_versions(release_hub, tmp_path, monkeypatch,
                                                                               capsys):
    from server.entrypoints.cli import main

    hub, lock = release_hub
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    lock_file = tmp_path / "release.lock"
    lock_file.write_text(lock.to_json())
    dest = tmp_path / "weights"
    where = ["--lock", str(lock_file), "--dir", str(dest)]
    assert main(["weights", "pull", *where]) == 0  # no --variant: the single files only
    out = capsys.readouterr().out
    assert "2 downloaded" in out and f"{dest}: model version 2.3-1.1" in out
    assert sorted(p.name for p in dest.iterdir() if p.suffix == ".safetensors") == [CKPT_11, UP_11]
    assert not (dest / "transformer").exists()
    assert main(["weights", "verify", *where]) == 0
    assert "model version 2.3-1.1" in capsys.readouterr().out
    # The converted 1.0 transformer pulled into the same directory: both commands refuse it, naming both sides.
    assert main(["weights", "pull", *where, "--variant", "diffusers"]) == 1
    err = capsys.readouterr().err
    assert "mixes model versions (2.3-1.0: transformer/ (2 files); 2.3-1.1: " in err and CKPT_11 in err
    assert main(["weights", "verify", *where]) == 1
    captured = capsys.readouterr()
    assert "2 files match the lock" in captured.out and "mixes model versions" in captured.err
    with pytest.raises(WeightsError, match="mixes model versions"):
        require_verified(dest)
