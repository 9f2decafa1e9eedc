"""The API process never imports torch, diffusers or transformers (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

from repo_paths import REPO

SCRIPT = r'''
import base64, io, json, sys, traceback
first = {}

class Watch:
    def find_spec(self, name, path=None, target=None):
        root = name.split(".")[0]
        if root in ("torch", "diffusers", "transformers") and root not in first:
            first[root] = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()
                           if "importlib" not in f.filename and "<frozen" not in f.filename][-6:]
        return None

sys.meta_path.insert(0, Watch())
from fastapi.testclient import TestClient
from PIL import Image
from server.api.main import create_app
from server.api.schemas import MODEL_ID
from server.core.config import ServerConfig
from server.entrypoints.cli import build_parser

build_parser()  # `serve` is this process too: every sub-command registers here
buffer = io.BytesIO()
Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "PNG")
uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
app = create_app(ServerConfig(data_dir=__import__("pathlib").Path(sys.argv[1]), insecure=True))
with TestClient(app) as client:
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/ai/models").status_code == 200
    queued = client.post("/api/ai/queue", json={"model": MODEL_ID, "prompt": "p", "input_image": uri})
    codes = queued.status_code
print(json.dumps({"status": codes, "body": queued.text[:300], "heavy": first}))
'''


def test_the_api_process_stays_light(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    heavy = report["heavy"]
    assert not heavy, f"the API process imported {sorted(heavy)}: {heavy}"
    assert report["status"] == 200, report["body"]
