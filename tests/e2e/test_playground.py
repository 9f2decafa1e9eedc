"""The web playground at `/`, in headless Chromium (Debian's `chromium`, driven by Playwright for
Python) against live `ltx-server serve --weights tiny` processes: a job from upload to a playing
video with live progress through both stages, the exact API request, cancel, a failure's message,
the history after a reload; with API keys: a wrong key's message and per-key history.

Set LTX_PLAYGROUND_SCREENSHOT=docs/playground.png to write the README's screenshot (taken here,
after a finished job).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serverkit import KEY_A, KEY_B, REPO, png_bytes, tiny_body, wait_for

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("LTX_CHROMIUM", "/usr/bin/chromium")
JOB_TIMEOUT_MS = 180_000
STEP_DELAY = 0.6  # seconds per progress report (faulty engine marker): each stage lasts several seconds


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}; .ci/run installs it")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Watched:
    """A page with every request URL and every console message recorded."""

    def __init__(self, browser, **context):
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.console: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))

    def foreign_requests(self, base: str) -> list[str]:
        return [url for url in self.requests if not url.startswith((base + "/", "blob:", "data:"))]

    def close(self) -> None:
        self.context.close()


def video_state(page) -> dict:
    return page.evaluate("""() => { const v = document.querySelector('#viewer-video');
        return {ready: v.readyState, duration: v.duration, src: v.currentSrc, error: v.error && v.error.code}; }""")


def record_progress(page) -> None:
    """Keep every progress text and bar value the page shows (a MutationObserver, in the page)."""
    page.evaluate("""() => {
        window.seenProgress = [];
        const label = document.querySelector('#viewer-progress-label');
        const bar = document.querySelector('#viewer-progress');
        const note = () => window.seenProgress.push({text: label.textContent, value: bar.value});
        new MutationObserver(note).observe(label, {childList: true, characterData: true, subtree: true});
        new MutationObserver(note).observe(bar, {attributes: true});
    }""")


@pytest.fixture(scope="module")
def open_server(live_server_factory):
    # No keys: loopback clients are served. 6 s leases make the worker report progress every second;
    # private URLs are allowed because the test image host is on 127.0.0.1.
    return live_server_factory(["--lease-seconds", "6", "--allow-private-urls"])


@pytest.fixture(scope="module")
def keyed_server(live_server_factory):
    # The per-key limits (on by default with keys) are off: the history test submits 25 jobs at once.
    return live_server_factory(["--api-keys", f"alice:{KEY_A},bob:{KEY_B}", "--lease-seconds", "6",
                                "--rate-limit", "0", "--max-active-jobs", "0"])


def test_playground_job_from_upload_to_video_cancel_failure_and_history(browser, open_server, tmp_path, have_jq):
    live = open_server
    watched = Watched(browser, viewport={"width": 1280, "height": 1000})
    page = watched.page
    image = tmp_path / "start.png"
    image.write_bytes(png_bytes(160, 96, (30, 120, 200)))

    response = page.goto(live.base + "/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    page.wait_for_selector("#param-num_frames")
    assert "smoke-test" in page.text_content("#notice").lower() and page.is_visible("#notice")
    assert page.is_hidden("#key-panel")  # no keys on this server

    # Every parameter of the schema has a labelled control with its default, range and help.
    schema = httpx.get(live.api + "/ai/models/ltx-2-3-quality-image-to-video").json()["request_schema"]
    for name, prop in schema["properties"].items():
        if name in ("prompt", "input_image"):
            continue
        control = page.locator(f"#param-{name}")
        assert control.count() == 1, name
        assert page.locator(f"label[for='param-{name}']").text_content() == prop["title"]
        assert prop["description"] in page.text_content(f"#param-{name}-help")
    assert page.input_value("#param-num_frames") == "121" and page.get_attribute("#param-num_frames", "max") == "481"

    # Upload: a preview, and the size auto picks (asked of the server), then an explicit size.
    page.set_input_files("#image-file", str(image))
    page.wait_for_function("() => document.querySelector('#size-info').textContent.includes('generated at')")
    assert "160×96 px → generated at 960×576 (auto)" in page.text_content("#size-info")
    assert page.evaluate("document.querySelector('#preview-image').naturalWidth") == 160
    page.fill("#prompt", f"a blue square drifting [[test-step-delay={STEP_DELAY}]]")
    page.fill("#param-num_frames", "9")
    page.fill("#param-frames_per_second", "12")
    page.fill("#param-resolution", "128x128")
    page.wait_for_function("() => document.querySelector('#size-info').textContent.includes('128×128')")

    # The API tab: the Python script is the exact request (run it; the server records the same job).
    page.click("#show-python")
    script = page.text_content("#snippet")
    assert '"num_frames": 9' in script and "start.png" in script and "Authorization" not in script
    (tmp_path / "request.py").write_text(script)
    ran = subprocess.run([sys.executable, "request.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    from_script = ran.stdout.strip()
    httpx.delete(f"{live.api}/ai/queue/{from_script}")  # not needed to run: only its recorded request matters
    page.click("#show-curl")
    command = page.text_content("#snippet")
    assert "curl -X POST" in command and "base64 -w0 'start.png'" in command
    from_curl = None
    if have_jq:  # CI installs jq; the cURL command builds the data: URI with base64 and jq
        ran = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        from_curl = json.loads(ran.stdout)["generations"][0]["generation_id"]
        httpx.delete(f"{live.api}/ai/queue/{from_curl}")

    # Submit through the queue and watch the progress advance through both stages.
    record_progress(page)
    page.click("#submit")
    page.wait_for_selector("#viewer-result", state="visible", timeout=JOB_TIMEOUT_MS)
    seen = page.evaluate("window.seenProgress")
    texts = [entry["text"] for entry in seen]
    assert any(re.fullmatch(r"stage 1 · step [1-8]/8 — \d+%", text) for text in texts), texts
    assert any(re.fullmatch(r"stage 2 · step [1-3]/3 — \d+%", text) for text in texts), texts
    first_stage2 = next(i for i, text in enumerate(texts) if text.startswith("stage 2"))
    assert all(not text.startswith("stage 1") for text in texts[first_stage2:]), texts
    values = [entry["value"] for entry in seen if entry["text"] != "Waiting in the queue…"]
    assert values == sorted(values) and any(0 < value < 100 for value in values)  # a real bar, moving forward

    job_id = page.text_content("#viewer-id")
    row = httpx.get(f"{live.api}/ai/queue/{job_id}").json()
    assert row["status"] == "succeeded" and row["num_frames"] == 9 and row["resolution"] == "128x128"
    request_fields = [name for name in schema["properties"] if name != "seed"]
    for snippet_job in filter(None, (from_script, from_curl)):  # the snippets sent the very same request
        sent = httpx.get(f"{live.api}/ai/queue/{snippet_job}").json()
        # (extension fields left at their defaults are not echoed: .get)
        assert {k: sent.get(k) for k in request_fields} == {k: row.get(k) for k in request_fields}

    # The video plays inline: a loadable MP4 of num_frames / fps seconds, with its audio decoded.
    page.wait_for_function("() => document.querySelector('#viewer-video').readyState >= 1", timeout=30_000)
    state = video_state(page)
    assert state["error"] is None and state["src"].startswith(live.base + "/api/results/")
    assert state["duration"] == pytest.approx(9 / 12, abs=0.03)
    page.evaluate("() => { const v = document.querySelector('#viewer-video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('#viewer-video').ended", timeout=30_000)
    assert page.evaluate("document.querySelector('#viewer-video').webkitAudioDecodedByteCount") > 0
    assert page.get_attribute("#download", "href") == state["src"]
    assert page.text_content("#viewer-seed") == str(row["output"]["seed"]) == str(row["seed"])

    # The README's screenshot: the page right after a finished job.
    shot = Path(os.environ.get("LTX_PLAYGROUND_SCREENSHOT") or tmp_path / "playground.png")
    page.evaluate("document.querySelector('#viewer-video').currentTime = 0.2")
    page.screenshot(path=str(REPO / shot if not shot.is_absolute() else shot), full_page=True)

    # "Run again with this seed": the same request, the same seed, a new job.
    page.click("#rerun")
    page.wait_for_function(f"() => document.querySelector('#viewer-id').textContent !== '{job_id}'")
    again = page.text_content("#viewer-id")
    assert httpx.get(f"{live.api}/ai/queue/{again}").json()["seed"] == row["seed"]
    page.wait_for_selector("#viewer-result", state="visible", timeout=JOB_TIMEOUT_MS)

    # A second job, cancelled while it runs.
    page.fill("#prompt", "a job to cancel [[test-step-delay=3]]")
    page.fill("#param-seed", "")
    page.click("#submit")
    page.wait_for_function(f"() => !['{job_id}', '{again}'].includes(document.querySelector('#viewer-id').textContent)")
    cancelled = page.text_content("#viewer-id")
    page.wait_for_function("() => /stage|preparing/.test(document.querySelector('#viewer-progress-label').textContent)",
                           timeout=JOB_TIMEOUT_MS)
    page.click("#cancel")
    page.wait_for_function("() => document.querySelector('#viewer-status').textContent.includes('Cancelled')")
    assert httpx.get(f"{live.api}/ai/queue/{cancelled}").json()["status"] == "cancelled"

    # A job that fails shows its message.
    page.fill("#prompt", "a job that fails [[test-oom]]")
    page.click("#submit")
    page.wait_for_function(f"() => !['{cancelled}'].includes(document.querySelector('#viewer-id').textContent)")
    failed = page.text_content("#viewer-id")
    page.wait_for_selector("#viewer-error", state="visible", timeout=JOB_TIMEOUT_MS)
    assert "Out of memory" in page.text_content("#viewer-error")

    # After a reload the history (the list endpoint, every status) has them all, with posters.
    page.reload()
    page.wait_for_selector(f"#history-list li[data-id='{failed}']")
    statuses = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#history-list li')]
        .map(li => [li.dataset.id, li.querySelector('.badge').textContent]))""")
    assert statuses[job_id] == statuses[again] == "succeeded"
    assert statuses[cancelled] == statuses[from_script] == "cancelled" and statuses[failed] == "failed"
    assert from_curl is None or statuses[from_curl] == "cancelled"
    assert "Out of memory" in page.text_content(f"#history-list li[data-id='{failed}'] .history-error")
    page.wait_for_function(f"() => document.querySelector(\"li[data-id='{job_id}'] img.poster\").naturalWidth > 0")
    assert page.evaluate(f"document.querySelector(\"li[data-id='{job_id}'] img.poster\").naturalWidth") == 128
    page.click(f"#history-list li[data-id='{job_id}'] button")
    page.wait_for_selector("#viewer-result", state="visible")
    page.click("#viewer-params-block summary")
    params = page.text_content("#viewer-params")
    assert "Num Frames9" in params and "Resolution128x128" in params and "128×128, 9 frames at 12 fps" in params
    page.click(f"#history-list li[data-id='{failed}'] button")
    assert "Out of memory" in page.text_content("#viewer-error") and page.is_hidden("#viewer-result")

    # Nothing but this server was asked for anything, and the policy held (no violations reported).
    assert watched.foreign_requests(live.base) == []
    assert [line for line in watched.console if "Content Security Policy" in line or "pageerror" in line] == []
    # The policy is enforced: an inline script injected now does not run.
    ran_inline = page.evaluate("""() => { const s = document.createElement('script');
        s.textContent = 'window.inlineRan = true'; document.body.append(s); return window.inlineRan === true; }""")
    assert ran_inline is False
    watched.close()


def test_playground_is_accessible_and_fits_a_phone(browser, open_server):
    watched = Watched(browser, viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = watched.page
    page.goto(open_server.base + "/")
    page.wait_for_selector("#param-num_frames")
    # No sideways scrolling at a phone's width.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    # Every visible control has a label (or an accessible name), and help text is tied to it.
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(el => el.offsetParent !== null || el.type === 'file')
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map(el => el.id || el.outerHTML)""")
    assert unlabelled == []
    # Keyboard: Tab walks the form in reading order, from the image to the parameters to Generate.
    order = []
    for _ in range(40):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
    wanted = ["image-file", "image-url", "prompt", "param-num_frames", "param-resolution", "submit"]
    positions = [order.index(name) for name in wanted]
    assert positions == sorted(positions), order
    # Text contrast: body text and help text against their backgrounds are at least 4.5:1.
    ratios = page.evaluate("""() => {
        const lum = (css) => { const [r, g, b] = css.match(/\\d+/g).slice(0, 3).map(Number).map(c => {
            c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
            return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
        const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
            return (x + 0.05) / (y + 0.05); };
        const bg = (el) => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
            if (c !== 'rgba(0, 0, 0, 0)') return c; } return 'rgb(255, 255, 255)'; };
        return ['.help', 'label', '#notice', '#submit', 'h1'].map(sel => { const el = document.querySelector(sel);
            return [sel, ratio(getComputedStyle(el).color, bg(el))]; });
    }""")
    assert all(value >= 4.5 for _, value in ratios), ratios
    watched.close()


def test_playground_with_keys_wrong_key_message_and_per_key_history(browser, keyed_server):
    live = keyed_server
    watched = Watched(browser, viewport={"width": 1280, "height": 900})
    page = watched.page
    bobs = httpx.post(live.api + "/ai/queue", json=tiny_body("bob's private job"),
                      headers={"Authorization": f"Bearer {KEY_B}"}).json()["generations"][0]["generation_id"]

    page.goto(live.base + "/")
    page.wait_for_selector("#key-panel", state="visible")
    assert "needs an API key" in page.text_content("#page-error")
    page.fill("#api-key", "not-a-real-key-123")
    page.click("#key-save")
    page.wait_for_function("() => document.querySelector('#page-error').textContent.includes('refused')")
    assert "The API key was refused (401)" in page.text_content("#page-error")
    assert page.locator("#param-num_frames").count() == 0  # nothing loads without a valid key

    page.fill("#api-key", KEY_A)
    page.click("#key-save")
    page.wait_for_selector("#param-num_frames")
    assert page.is_hidden("#page-error")
    page.set_input_files("#image-file", files=[{"name": "a.png", "mimeType": "image/png", "buffer": png_bytes()}])
    page.fill("#prompt", "alice's job")
    page.fill("#param-num_frames", "9")
    page.fill("#param-resolution", "128x128")
    assert 'Authorization: Bearer $LTX_API_KEY' in page.text_content("#snippet")  # the key is never written out
    page.click("#submit")
    page.wait_for_selector("#viewer-result", state="visible", timeout=JOB_TIMEOUT_MS)
    alices = page.text_content("#viewer-id")

    # The key survives a reload (localStorage), and alice's history never shows bob's job.
    page.reload()
    page.wait_for_selector(f"#history-list li[data-id='{alices}']")
    wait_for(lambda: httpx.get(f"{live.api}/ai/queue/{bobs}", headers={"Authorization": f"Bearer {KEY_B}"}).json(),
             lambda row: row["status"] == "succeeded", timeout=120)
    loads = int(page.get_attribute("#history-list", "data-loads"))
    page.click("#history-refresh")
    page.wait_for_function(f"() => Number(document.querySelector('#history-list').dataset.loads) > {loads}")
    assert page.locator(f"[data-id='{alices}']").count() == 1
    assert page.locator(f"[data-id='{bobs}']").count() == 0 and "bob's private job" not in page.content()

    # Bob's key: only bob's jobs, a page at a time (20), older ones on request.
    bob = {"Authorization": f"Bearer {KEY_B}"}
    more = []
    for _ in range(6):
        answer = httpx.post(live.api + "/ai/queue", json=tiny_body("bob's backlog", num_generations=4), headers=bob)
        more += [g["generation_id"] for g in answer.json()["generations"]]
    for generation_id in more:  # cancelled at once: they only fill the history
        assert httpx.delete(f"{live.api}/ai/queue/{generation_id}", headers=bob).status_code == 200
    page.fill("#api-key", KEY_B)
    page.click("#key-save")
    page.wait_for_selector(f"#history-list li[data-id='{more[-1]}']")
    assert page.locator("#history-list li").count() == 20 and page.is_visible("#history-more")
    page.click("#history-more")
    page.wait_for_selector(f"#history-list li[data-id='{bobs}']")
    assert page.locator("#history-list li").count() == 25 and page.is_hidden("#history-more")
    assert page.locator(f"[data-id='{alices}']").count() == 0 and "alice's job" not in page.text_content("#history")

    # The key went only to this server and never into a URL.
    assert watched.foreign_requests(live.base) == []
    assert not [url for url in watched.requests if KEY_A in url or KEY_B in url]
    assert page.evaluate("localStorage.getItem('ltx-playground-api-key')") == KEY_B
    assert [line for line in watched.console if "pageerror" in line] == [], watched.console
    watched.close()


def test_playground_image_by_paste_drop_and_url(browser, open_server, image_host):
    live = open_server
    watched = Watched(browser, viewport={"width": 1280, "height": 900})
    page = watched.page
    page.goto(live.base + "/")
    page.wait_for_selector("#param-num_frames")
    make_file = """async ([width, height, name]) => {
        const canvas = document.createElement('canvas'); canvas.width = width; canvas.height = height;
        const blob = await new Promise(resolve => canvas.toBlob(resolve, 'image/png'));
        const data = new DataTransfer(); data.items.add(new File([blob], name, {type: 'image/png'})); return data; }"""

    # Paste (Ctrl+V of an image): the clipboard's file becomes the start image.
    page.evaluate(f"""async () => {{ const data = await ({make_file})([300, 200, 'image.png']);
        document.dispatchEvent(new ClipboardEvent('paste', {{clipboardData: data, bubbles: true}})); }}""")
    page.wait_for_function("() => document.querySelector('#size-info').textContent.startsWith('image.png')")
    auto = httpx.get(live.api + "/playground/output-size", params={"width": 300, "height": 200}).json()
    assert f"300×200 px → generated at {auto['width']}×{auto['height']} (auto)" in page.text_content("#size-info")
    assert page.evaluate("document.querySelector('#preview-image').naturalWidth") == 300

    # Drag and drop onto the drop zone.
    page.evaluate(f"""async () => {{ const data = await ({make_file})([64, 48, 'dropped.png']);
        document.querySelector('#drop-zone').dispatchEvent(new DragEvent('drop', {{dataTransfer: data,
            bubbles: true, cancelable: true}})); }}""")
    page.wait_for_function("() => document.querySelector('#size-info').textContent.startsWith('dropped.png')")
    assert "64×48 px" in page.text_content("#size-info") and "'dropped.png'" in page.text_content("#snippet")

    # A URL: sent as it is; its preview and size come through the server (same checks as a job's
    # fetch), so the browser never contacts the image's host.
    url = image_host.add("/playground-start.png", png_bytes(300, 150, (20, 160, 60)))
    page.fill("#image-url", url)
    page.wait_for_selector("#preview-image", state="visible")
    page.wait_for_function("() => document.querySelector('#size-info').textContent.includes('generated at')")
    auto = httpx.get(live.api + "/playground/output-size", params={"width": 300, "height": 150}).json()
    assert f"300×150 px → generated at {auto['width']}×{auto['height']} (auto)" in page.text_content("#size-info")
    assert page.evaluate("document.querySelector('#preview-image').naturalWidth") == 300
    assert f'"input_image": "{url}"' in page.text_content("#snippet")
    page.fill("#image-url", image_host.base + "/missing.png")
    page.wait_for_function("() => document.querySelector('#size-info').textContent.includes('could not use')")
    assert "404" in page.text_content("#size-info") and page.is_hidden("#preview-image")
    assert watched.foreign_requests(live.base) == []  # the image host (another origin) was never asked
    watched.close()


def test_playground_form_copes_with_any_schema_and_parses_sse_in_chunks(browser, open_server):
    """The form module on a schema with types the model does not have today (other extensions add
    arrays of objects, unions, flags), and the SSE parser fed awkward chunk boundaries."""
    watched = Watched(browser)
    page = watched.page
    page.goto(open_server.base + "/")
    page.wait_for_selector("#param-num_frames")
    result = page.evaluate("""async () => {
        const { SchemaForm } = await import('/playground/schema-form.js');
        const schema = {
          $defs: { Keyframe: { type: 'object',
                               properties: { frame: { type: 'integer' }, image: { type: 'string' } } } },
          properties: {
            prompt: { type: 'string' },
            keyframes: { type: 'array', items: { $ref: '#/$defs/Keyframe' }, default: [], title: 'Keyframes',
                         description: 'More images.' },
            loras: { anyOf: [{ type: 'array', items: { type: 'object' } }, { type: 'null' }], default: null,
                     title: 'Loras' },
            enhance_prompt: { type: 'boolean', default: false, title: 'Enhance Prompt', 'x-order': 1 },
            style: { anyOf: [{ enum: ['a', 'b'], type: 'string' }, { type: 'null' }], default: null, title: 'Style' },
            strength: { type: 'number', exclusiveMinimum: 0, maximum: 2, default: 1, title: 'Strength' },
            mystery: { title: 'Mystery' },
            count: { type: ['integer', 'null'], minimum: 1, default: null, title: 'Count' },
          } };
        const box = document.createElement('div'); document.body.append(box);
        const form = new SchemaForm(box, schema, ['prompt']);
        const kinds = Object.fromEntries([...form.fields].map(([name, f]) => [name, f.info.kind]));
        const advanced = [...box.querySelectorAll('details [data-param]')].map(el => el.dataset.param);
        const untouched = form.read();
        box.querySelector('#param-keyframes').value = '[{"frame": 8, "image": "https://x/y.png"}]';
        box.querySelector('#param-enhance_prompt').checked = true;
        box.querySelector('#param-style').value = '"b"';
        box.querySelector('#param-count').value = '3';
        const edited = form.read();
        box.querySelector('#param-loras').value = '[{';
        const broken = form.read();
        return { kinds, advanced, untouched, edited, broken: broken.errors,
                 labels: [...box.querySelectorAll('label')].map(l => l.htmlFor) };
    }""")
    assert result["kinds"] == {"enhance_prompt": "checkbox", "keyframes": "json", "loras": "json", "style": "select",
                               "strength": "number", "mystery": "json", "count": "number"}
    assert list(result["kinds"])[0] == "enhance_prompt"  # x-order first
    assert sorted(result["advanced"]) == ["keyframes", "loras", "mystery"]
    assert result["untouched"] == {"values": {}, "errors": []}  # defaults are not sent
    assert result["edited"]["values"] == {"keyframes": [{"frame": 8, "image": "https://x/y.png"}],
                                          "enhance_prompt": True, "style": "b", "count": 3}
    assert len(result["broken"]) == 1 and result["broken"][0].startswith("Loras: not valid JSON")
    assert sorted(result["labels"]) == sorted(f"param-{name}" for name in result["kinds"])

    events = page.evaluate("""async () => {
        const { SSEParser } = await import('/playground/sse.js');
        const seen = [];
        const parser = new SSEParser(event => seen.push(event));
        const stream = ': connected\\r\\n\\r\\nevent: media_generation_progress\\r\\n'
          + 'data: {"a":1,\\r\\ndata: "b":2}\\r\\n\\r\\n'
          + ': keep-alive\\n\\nevent: media_generation_completed\\ndata:{"x":"y"}\\n\\ndata: plain\\r\\r';
        for (let i = 0; i < stream.length; i += 3) parser.push(stream.slice(i, i + 3));  // split anywhere
        parser.finish();
        return seen;
    }""")
    assert events == [
        {"event": "media_generation_progress", "data": '{"a":1,\n"b":2}', "id": ""},
        {"event": "media_generation_completed", "data": '{"x":"y"}', "id": ""},
        {"event": "message", "data": "plain", "id": ""},
    ]
    watched.close()
