// The playground: pick a start image, write a prompt, set the model's parameters (a form generated
// from its request schema), submit through the queue, watch progress on /api/events, play the result,
// browse the history. Every call goes to this origin; the API key (when the server needs one) lives
// in localStorage and travels only in the Authorization header, never in a URL.

import { readEventStream } from "./sse.js";
import { SchemaForm } from "./schema-form.js";
import { requestSnippets } from "./snippets.js";

const KEY_STORAGE = "ltx-playground-api-key";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const STAGES = { prepare: "preparing", stage1: "stage 1", upsample: "upsampling ×2", stage2: "stage 2",
  decode: "decoding", done: "done" };
const SPECIAL_FIELDS = ["prompt", "input_image"]; // rendered by the page itself (image picker, prompt box)
const HISTORY_PAGE_SIZE = 20;

const $ = (id) => document.getElementById(id);

const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  keysRequired: false,
  model: null,
  form: null,
  image: null, // the picked file: {dataUri, name, mime, width, height, objectUrl}
  remote: null, // the URL's image as the server described it: {url, name, width, height}
  jobs: new Map(), // generation id -> its row (GET /api/ai/queue/{id})
  live: new Map(), // generation id -> the last progress event (stage, step, total, progress)
  order: [], // history order, newest first
  items: new Map(), // generation id -> its history <li>
  posters: new Map(), // generation id -> object URL of its first frame
  shown: null,
  snippet: "curl",
  events: null,
  historyTimer: null,
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// ---- talking to the API ------------------------------------------------------------------------

function authHeaders() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

async function errorMessage(response) {
  let detail = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    const error = body.error || {};
    detail = error.detail || error.message || error.title || detail; // Oxen's envelope or OpenAI's shape
  } catch {
    // not JSON: keep the status line
  }
  return detail;
}

async function api(path, { method = "GET", json, raw = false } = {}) {
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(path, { method, headers, body, cache: "no-store" });
  if (!response.ok) {
    const error = new ApiError(response.status, await errorMessage(response));
    if (response.status === 401) unauthenticated(error.message);
    throw error;
  }
  return raw ? response : response.json();
}

function unauthenticated(detail) {
  if (/No API keys are configured/.test(detail)) {
    showPageError(detail); // keyless server reached from a non-loopback address: a key would not help
    return;
  }
  state.keysRequired = true;
  $("key-panel").hidden = false;
  const message = state.key
    ? `The API key was refused (401): ${detail} Check the key and try again.`
    : `This server needs an API key (401): ${detail} Enter your key below.`;
  showPageError(message);
  updateSnippet();
}

function showPageError(message) {
  $("page-error").textContent = message;
  $("page-error").hidden = false;
}

function clearPageError() {
  $("page-error").hidden = true;
  $("page-error").textContent = "";
}

// ---- start-up and keys ---------------------------------------------------------------------------

async function connect() {
  clearPageError();
  state.events?.abort();
  let model;
  try {
    const list = await api("/api/ai/models");
    model = await api(`/api/ai/models/${encodeURIComponent(list.data[0].id)}`);
  } catch (error) {
    if (error.status !== 401) showPageError(`Could not load the model: ${error.message}`);
    if (error.status === 401) $("api-key").focus();
    return;
  }
  state.model = model;
  renderModel();
  startEvents();
  await loadHistory();
}

function resetJobs() {
  for (const url of state.posters.values()) URL.revokeObjectURL(url);
  state.posters.clear();
  state.jobs.clear();
  state.live.clear();
  state.items.clear();
  state.order = [];
  state.shown = null;
  $("history-list").replaceChildren();
  $("viewer").hidden = true;
}

function saveKey(event) {
  event.preventDefault();
  state.key = $("api-key").value.trim();
  if (state.key) localStorage.setItem(KEY_STORAGE, state.key);
  else localStorage.removeItem(KEY_STORAGE);
  resetJobs();
  connect();
}

function forgetKey() {
  state.key = "";
  $("api-key").value = "";
  localStorage.removeItem(KEY_STORAGE);
  resetJobs();
  connect();
}

function renderModel() {
  const model = state.model;
  $("model-name").textContent = `${model.display_name || model.id} (${model.id}) · image + prompt → video with audio`;
  const notice = $("notice");
  if (model.smoke_test || model.notice) {
    notice.textContent = model.notice || "The tiny smoke-test model is in use: outputs are noise.";
    notice.hidden = false;
  } else notice.hidden = true;
  const schema = model.request_schema || model.json_request_schema || { properties: {} };
  const promptHelp = schema.properties?.prompt?.description;
  if (promptHelp) $("prompt-help").textContent = promptHelp;
  const previous = state.form?.read().values;
  state.form = new SchemaForm($("params"), schema, SPECIAL_FIELDS);
  if (previous) state.form.apply(previous);
  $("key-panel").hidden = !state.keysRequired && !state.key;
  $("api-panel").hidden = false;
  updateSnippet();
  updateSize();
}

// ---- the start image -----------------------------------------------------------------------------

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function decodedSize(url) {
  // The browser applies EXIF orientation when it decodes, as the server does.
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve({ width: image.naturalWidth, height: image.naturalHeight });
    image.onerror = () => reject(new Error("the image could not be decoded"));
    image.src = url;
  });
}

async function useFile(file) {
  if (!file) return;
  if (!/^image\/(png|jpeg|webp)$/.test(file.type)) {
    showFormError(`${file.name || "The pasted file"} is not a PNG, JPEG or WebP image.`);
    return;
  }
  const objectUrl = URL.createObjectURL(file);
  try {
    const [dataUri, size] = await Promise.all([readAsDataURL(file), decodedSize(objectUrl)]);
    if (state.image) URL.revokeObjectURL(state.image.objectUrl);
    const name = file.name || `pasted-image.${file.type.split("/")[1]}`;
    state.image = { dataUri, name, mime: file.type, objectUrl, ...size };
  } catch (error) {
    URL.revokeObjectURL(objectUrl);
    showFormError(`${file.name || "The image"}: ${error.message}.`);
    return;
  }
  hideFormError();
  $("image-url").value = "";
  state.remote = null;
  $("preview-image").src = state.image.objectUrl;
  $("preview-image").hidden = false;
  $("preview").hidden = false;
  updateSize();
  updateSnippet();
}

let urlTimer = null;

function useUrl() {
  const url = $("image-url").value.trim();
  if (url && state.image) {
    URL.revokeObjectURL(state.image.objectUrl);
    state.image = null;
    $("image-file").value = "";
  }
  if (state.remote?.url !== url) state.remote = null;
  $("preview").hidden = !url;
  $("preview-image").hidden = true;
  $("preview-image").removeAttribute("src");
  $("size-info").textContent = url ? "Fetching the image through the server…" : "";
  clearTimeout(urlTimer);
  if (/^https?:\/\/\S+$/i.test(url)) urlTimer = setTimeout(describeUrl, 500); // after typing stops
  updateSnippet();
}

let urlRequest = 0;

async function describeUrl() {
  const url = $("image-url").value.trim();
  const ticket = ++urlRequest;
  try {
    // The server fetches it as a job would (same address checks and limits): this page loads
    // nothing from the image's host, and sees only a small preview.
    const described = await api("/api/playground/start-image", { method: "POST",
      json: { input_image: url, resolution: currentResolution() } });
    if (ticket !== urlRequest || $("image-url").value.trim() !== url) return;
    state.remote = { url, name: "the URL's image", width: described.width, height: described.height };
    $("preview-image").src = described.preview;
    $("preview-image").hidden = false;
    updateSize();
  } catch (error) {
    if (ticket !== urlRequest) return;
    $("size-info").textContent = `The server could not use this URL: ${error.message}`;
  }
}

function currentResolution() {
  return state.form?.fields.get("resolution")?.control.value.trim() || "auto";
}

let sizeRequest = 0;

async function updateSize() {
  const info = $("size-info");
  const resolution = currentResolution();
  const picked = state.image || state.remote;
  if (!picked) return;
  const { width, height } = picked;
  const ticket = ++sizeRequest;
  try {
    const size = await api(`/api/playground/output-size?width=${width}&height=${height}`
      + `&resolution=${encodeURIComponent(resolution)}`);
    if (ticket !== sizeRequest) return;
    info.textContent = `${picked.name}: ${width}×${height} px → generated at ${size.width}×${size.height} (${resolution})`;
  } catch (error) {
    if (ticket !== sizeRequest) return;
    info.textContent = `${picked.name}: ${width}×${height} px. Resolution: ${error.message}`;
  }
}

function wireImageInputs() {
  $("image-file").addEventListener("change", (event) => useFile(event.target.files[0]));
  $("image-url").addEventListener("input", useUrl);
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer.files[0];
    if (file) return void useFile(file);
    const url = (event.dataTransfer.getData("text/uri-list") || event.dataTransfer.getData("text/plain")).trim();
    if (/^https?:\/\//i.test(url)) {
      $("image-url").value = url.split(/\s/)[0];
      useUrl();
    }
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((item) => item.type.startsWith("image/"));
    if (!file) return; // text pastes go where they were meant to
    event.preventDefault();
    useFile(file);
  });
}

// ---- the request ---------------------------------------------------------------------------------

function buildRequest() {
  const prompt = $("prompt").value;
  const url = $("image-url").value.trim();
  const inputImage = url || state.image?.dataUri || "";
  const { values, errors } = state.form ? state.form.read() : { values: {}, errors: [] };
  const body = { model: state.model?.id || "", prompt, input_image: inputImage, ...values };
  const problems = [];
  if (!inputImage) problems.push("Start image: choose a file, drop or paste an image, or give a URL.");
  if (!prompt.trim()) problems.push("Prompt: describe what should happen.");
  return { body, problems: [...problems, ...errors], image: url ? null : state.image };
}

function updateSnippet() {
  if (!state.model) return;
  const { body, image } = buildRequest();
  const snippets = requestSnippets({ endpoint: `${location.origin}/api/ai/queue`, body, image,
    withKey: state.keysRequired || Boolean(state.key) });
  $("snippet").textContent = snippets[state.snippet];
}

function showSnippet(which) {
  state.snippet = which;
  $("show-curl").setAttribute("aria-pressed", String(which === "curl"));
  $("show-python").setAttribute("aria-pressed", String(which === "python"));
  $("copy-status").textContent = "";
  updateSnippet();
}

async function copySnippet() {
  const text = $("snippet").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("copy-status").textContent = `Copied the ${state.snippet === "curl" ? "cURL command" : "Python script"}.`;
  } catch {
    // No clipboard access (an insecure origin, or refused): select it for Ctrl+C instead.
    window.getSelection().selectAllChildren($("snippet"));
    $("copy-status").textContent = "Selected: press Ctrl+C to copy.";
  }
}

function showFormError(message) {
  $("form-error").textContent = message;
  $("form-error").hidden = false;
}

function hideFormError() {
  $("form-error").hidden = true;
  $("form-error").textContent = "";
}

async function submit(event) {
  event.preventDefault();
  if (!state.model) return void connect();
  const { body, problems } = buildRequest();
  if (problems.length) return void showFormError(problems.join(" "));
  hideFormError();
  $("submit").disabled = true;
  try {
    const answer = await api("/api/ai/queue", { method: "POST", json: body });
    const id = answer.generations[0].generation_id;
    const row = await api(`/api/ai/queue/${encodeURIComponent(id)}`);
    remember(row, { prepend: true });
    show(id, { focus: false });
    // In one column (a phone) the viewer is below the form: bring the progress into sight.
    const still = matchMedia("(prefers-reduced-motion: reduce)").matches;
    $("viewer").scrollIntoView({ block: "nearest", behavior: still ? "auto" : "smooth" });
  } catch (error) {
    if (error.status !== 401) showFormError(`The server did not accept the request: ${error.message}`);
  } finally {
    $("submit").disabled = false;
  }
}

// ---- jobs: the viewer ----------------------------------------------------------------------------

function remember(row, { prepend = false } = {}) {
  const id = row.generation_id;
  const known = state.jobs.has(id);
  state.jobs.set(id, row);
  if (TERMINAL.has(row.status)) state.live.delete(id);
  if (!state.order.includes(id)) {
    if (prepend) state.order.unshift(id);
    else state.order.push(id);
  }
  renderHistoryItem(id, { prepend: prepend && !known });
  if (state.shown === id) renderViewer();
}

async function refreshJob(id) {
  try {
    remember(await api(`/api/ai/queue/${encodeURIComponent(id)}`));
  } catch (error) {
    if (error.status === 404) state.jobs.delete(id);
  }
}

function progressText(row) {
  if (row.status === "queued") return "Waiting in the queue…";
  const live = state.live.get(row.generation_id);
  const at = live && live.stage === row.stage ? live : row;
  const stage = STAGES[at.stage] || at.stage || "starting";
  const step = at.total && (at.stage === "stage1" || at.stage === "stage2") ? ` · step ${at.step}/${at.total}` : "";
  return `${stage}${step} — ${Math.round((at.progress || 0) * 100)}%`;
}

function statusText(row) {
  const when = row.completed_at || row.started_at || row.enqueued_at;
  const time = when ? new Date(when * 1000).toLocaleTimeString() : "";
  return `${row.status[0].toUpperCase()}${row.status.slice(1)}${time ? ` (${time})` : ""}`;
}

function show(id, { focus = true } = {}) {
  state.shown = id;
  for (const [itemId, item] of state.items) {
    item.querySelector("button").setAttribute("aria-current", String(itemId === id));
  }
  renderViewer();
  if (focus) $("viewer").focus();
}

function paramEntries(row) {
  const names = [...SPECIAL_FIELDS, ...(state.form ? state.form.fields.keys() : [])];
  const entries = names.filter((name) => name in row).map((name) => {
    const label = name === "prompt" ? "Prompt" : name === "input_image" ? "Start image"
      : state.form?.labelOf(name) || name;
    const value = row[name];
    return [label, typeof value === "object" && value !== null ? JSON.stringify(value) : String(value)];
  });
  const out = row.output;
  if (out) {
    entries.push(["Output", `${out.width}×${out.height}, ${out.num_frames} frames at ${out.fps} fps, `
      + (out.has_audio ? "with audio" : "no audio")]);
  }
  return entries;
}

function renderViewer() {
  const row = state.jobs.get(state.shown);
  if (!row) return;
  $("viewer").hidden = false;
  $("viewer-id").textContent = row.generation_id;
  $("viewer-status").textContent = `Status: ${statusText(row)}`;
  const active = !TERMINAL.has(row.status);
  $("viewer-progress-block").hidden = !active;
  if (active) {
    const live = state.live.get(row.generation_id);
    $("viewer-progress").value = Math.round(((live?.progress ?? row.progress) || 0) * 100);
    $("viewer-progress-label").textContent = progressText(row);
  }
  const error = row.status === "failed" ? row.error_message || "The generation failed."
    : row.status === "cancelled" ? "Cancelled." : row.result_deleted_at ? row.error_message : "";
  $("viewer-error").textContent = error || "";
  $("viewer-error").hidden = !error;
  const done = row.status === "succeeded" && row.result_url;
  $("viewer-result").hidden = !done;
  const video = $("viewer-video");
  if (done && video.dataset.job !== row.generation_id) {
    video.dataset.job = row.generation_id;
    video.src = row.result_url; // a signed URL: no key needed, so a plain <video src> can play it
    $("download").href = row.result_url;
    $("download").setAttribute("download", `${row.generation_id}.mp4`);
  } else if (!done && video.dataset.job) {
    delete video.dataset.job;
    video.removeAttribute("src");
    video.load();
  }
  $("viewer-seed").textContent = String(row.output?.seed ?? row.seed ?? "");
  const list = $("viewer-params");
  list.replaceChildren();
  for (const [label, value] of paramEntries(row)) {
    const term = document.createElement("dt");
    term.textContent = label;
    const detail = document.createElement("dd");
    detail.textContent = value;
    list.append(term, detail);
  }
}

async function cancelShown() {
  const id = state.shown;
  if (!id) return;
  $("cancel").disabled = true;
  try {
    await api(`/api/ai/queue/${encodeURIComponent(id)}`, { method: "DELETE" });
    await refreshJob(id);
  } catch (error) {
    if (error.status !== 401) showPageError(`Could not cancel: ${error.message}`);
  } finally {
    $("cancel").disabled = false;
  }
}

function runAgain() {
  const row = state.jobs.get(state.shown);
  if (!row || !state.form) return;
  const values = {};
  for (const name of state.form.fields.keys()) if (name in row) values[name] = row[name];
  values.seed = row.output?.seed ?? row.seed;
  state.form.apply(values);
  $("prompt").value = row.prompt ?? $("prompt").value;
  if (/^https?:\/\//i.test(row.input_image || "")) {
    $("image-url").value = row.input_image;
    useUrl();
  } else if (!state.image) {
    // The server echoes a data: URI start image as its header only; the picture itself is not kept.
    showFormError("Choose the start image again (the server does not send uploaded images back), then Generate.");
    $("image-file").focus();
    updateSnippet();
    return;
  }
  updateSnippet();
  updateSize();
  $("generate-form").requestSubmit();
}

// ---- live events ---------------------------------------------------------------------------------

function startEvents() {
  state.events?.abort();
  const controller = new AbortController();
  state.events = controller;
  (async () => {
    let delay = 1000;
    while (!controller.signal.aborted) {
      try {
        await readEventStream("/api/events", authHeaders(), onEvent, controller.signal);
        delay = 1000;
      } catch (failure) {
        if (controller.signal.aborted) return;
        if (failure instanceof Response && failure.status === 401) {
          unauthenticated(await errorMessage(failure));
          return;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
      // Events sent while disconnected are gone: read the active jobs again.
      for (const [id, row] of state.jobs) if (!TERMINAL.has(row.status)) refreshJob(id);
    }
  })();
}

function onEvent({ event, data }) {
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    return;
  }
  const id = payload.generation_id;
  if (!id) return;
  const row = state.jobs.get(id);
  if (!row) {
    scheduleHistoryReload(); // another tab or client made it
    return;
  }
  if (event === "media_generation_progress" || event === "media_generation_started") {
    if (TERMINAL.has(row.status)) return; // a late event for an ended job
    if (event === "media_generation_progress") state.live.set(id, payload);
    remember({ ...row, status: "processing", progress: payload.progress ?? row.progress,
      stage: payload.stage ?? row.stage });
  } else if (!TERMINAL.has(row.status) || event === "media_generation_completed") {
    refreshJob(id); // completed or cancelled: the row has the result URL, seed and message
  }
}

// ---- history -------------------------------------------------------------------------------------

function scheduleHistoryReload() {
  clearTimeout(state.historyTimer);
  state.historyTimer = setTimeout(loadHistory, 500);
}

async function loadHistory() {
  let page;
  try {
    page = await api(`/api/ai/generations?page_size=${HISTORY_PAGE_SIZE}&page=1`);
  } catch (error) {
    if (error.status !== 401) showPageError(`Could not load the history: ${error.message}`);
    return;
  }
  state.order = [];
  state.historyPage = 1;
  for (const row of page.generations) remember(row);
  const list = $("history-list");
  for (const id of state.order) list.append(state.items.get(id)); // newest first, as the server sent them
  $("history-empty").hidden = state.order.length > 0;
  $("history-more").hidden = page.total_pages <= 1;
  list.dataset.loads = String(Number(list.dataset.loads || 0) + 1); // lets a test (or a person) tell a reload happened
}

async function loadOlder() {
  const next = (state.historyPage || 1) + 1;
  let page;
  try {
    page = await api(`/api/ai/generations?page_size=${HISTORY_PAGE_SIZE}&page=${next}`);
  } catch (error) {
    if (error.status !== 401) showPageError(`Could not load the history: ${error.message}`);
    return;
  }
  state.historyPage = next;
  for (const row of page.generations) if (!state.jobs.has(row.generation_id)) remember(row);
  $("history-more").hidden = next >= page.total_pages;
}

async function loadPoster(id, image) {
  if (state.posters.has(id)) {
    image.src = state.posters.get(id);
    return;
  }
  try {
    // The thumbnail route needs the key, so it is fetched here and shown from a blob: URL.
    const response = await api(`/v1/videos/${encodeURIComponent(id)}/content?variant=thumbnail`, { raw: true });
    const url = URL.createObjectURL(await response.blob());
    state.posters.set(id, url);
    image.src = url;
  } catch {
    image.alt = "";
  }
}

function renderHistoryItem(id, { prepend = false } = {}) {
  const row = state.jobs.get(id);
  let item = state.items.get(id);
  if (!item) {
    item = document.createElement("li");
    item.dataset.id = id;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "history-item";
    button.addEventListener("click", () => show(id));
    const poster = document.createElement("img");
    poster.className = "poster";
    poster.alt = "";
    const text = document.createElement("span");
    text.className = "history-text";
    text.innerHTML = '<span class="history-prompt"></span><span class="badge"></span> '
      + '<span class="history-meta"></span><span class="history-error"></span>';
    button.append(poster, text);
    item.append(button);
    state.items.set(id, item);
    const list = $("history-list");
    if (prepend) list.prepend(item);
    else list.append(item);
    $("history-empty").hidden = true;
  }
  const button = item.querySelector("button");
  button.setAttribute("aria-current", String(state.shown === id));
  item.dataset.status = row.status;
  item.querySelector(".history-prompt").textContent = row.prompt || "(no prompt)";
  const badge = item.querySelector(".badge");
  badge.textContent = row.status;
  badge.className = `badge ${row.status}`;
  const out = row.output;
  item.querySelector(".history-meta").textContent = [
    out ? `${out.width}×${out.height}` : row.resolution, `${out?.num_frames ?? row.num_frames} frames`,
    row.status === "processing" ? progressText(row) : "",
  ].filter(Boolean).join(" · ");
  const failure = item.querySelector(".history-error");
  failure.textContent = row.status === "failed" ? row.error_message || "failed" : "";
  const poster = item.querySelector(".poster");
  if (row.status === "succeeded" && row.result_url && !poster.dataset.loaded) {
    poster.dataset.loaded = "1";
    poster.alt = `First frame of ${row.generation_id}`;
    loadPoster(id, poster);
  }
}

// ---- wiring --------------------------------------------------------------------------------------

function start() {
  $("api-key").value = state.key;
  $("key-form").addEventListener("submit", saveKey);
  $("key-forget").addEventListener("click", forgetKey);
  $("generate-form").addEventListener("submit", submit);
  $("generate-form").addEventListener("input", (event) => {
    if (event.target.id === "param-resolution") updateSize();
    updateSnippet();
  });
  $("generate-form").addEventListener("change", updateSnippet);
  $("show-curl").addEventListener("click", () => showSnippet("curl"));
  $("show-python").addEventListener("click", () => showSnippet("python"));
  $("copy-snippet").addEventListener("click", copySnippet);
  $("cancel").addEventListener("click", cancelShown);
  $("rerun").addEventListener("click", runAgain);
  $("history-refresh").addEventListener("click", loadHistory);
  $("history-more").addEventListener("click", loadOlder);
  wireImageInputs();
  connect();
}

start();
