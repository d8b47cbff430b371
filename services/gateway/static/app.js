// talkserve's web page: builds a job from the form, sends it to POST /v1/jobs, follows its
// Server-Sent Events into the progress bar, and plays the result, renewing its expiring links.
// Screen readers hear a job's milestones only (the #announcer live region). No build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, job: null, lastEventId: null, following: null, result: null, historyCursor: null,
                previews: {} };
const HISTORY_PAGE = 8;

// -- talking to the API ---------------------------------------------------------------------

function apiKey() {
  return $("api-key").value.trim();
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// The message a person should read for an API error body (any of the API's error shapes).
function messageOf(status, body, headers) {
  const err = body && body.error;
  let text = typeof err === "string" ? err : err && err.message;
  if (!text && body && body.detail) {
    text = typeof body.detail === "string" ? body.detail : body.detail.map((d) => d.msg).join("; ");
  }
  if (status === 401) return "This server needs a valid API key: paste yours in the API key box above.";
  if (status === 413) return `A file is too large. ${text || ""}`.trim();
  if (status === 429) {
    const wait = headers && headers.get ? headers.get("Retry-After") : null;
    return `Too many requests right now; please try again${wait ? ` in ${wait} s` : " shortly"}.`;
  }
  if (status === 503) return `The server is busy: ${text || "try again in a minute"}.`;
  return text || `The server answered HTTP ${status}.`;
}

class ApiError extends Error {
  constructor(status, body, headers) {
    super(messageOf(status, body, headers));
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(path, options = {}) {
  let resp;
  try {
    resp = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch (e) {
    throw new Error("Cannot reach the talkserve server. Is it running?");
  }
  const text = await resp.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!resp.ok) throw new ApiError(resp.status, body, resp.headers);
  return body;
}

// POST with upload progress (fetch cannot report it).
function postForm(path, form, onUpload) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onUpload(e.loaded / e.total); };
    xhr.onerror = () => reject(new Error("Cannot reach the talkserve server. Is it running?"));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new ApiError(xhr.status, body, { get: (h) => xhr.getResponseHeader(h) }));
    };
    xhr.send(form);
  });
}

// -- the page -------------------------------------------------------------------------------

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
  if (text) {
    $("notice").hidden = true;
    box.scrollIntoView({ block: "nearest" });
  }
}

// Something that is not an error (a cancelled job): shown plainly.
function showNotice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = !text;
  if (text) box.scrollIntoView({ block: "nearest" });
}

// Milestones only (queued, started, finished, failed, cancelled): progress steps stay silent.
function announce(text) {
  const region = $("announcer");
  if (region.textContent === text) region.textContent = "";  // the same words again are heard again
  region.textContent = text;
}

function kind() {
  return document.querySelector('input[name="kind"]:checked').value;
}

function inputsOf(k) {
  return k === "redub" ? ["video", "audio"] : ["image", "audio"];
}

function updateKind() {
  const k = kind();
  $("image-drop").hidden = k === "redub";
  $("video-drop").hidden = k !== "redub";
  for (const el of document.querySelectorAll("[data-kinds]")) {
    el.hidden = !el.dataset.kinds.split(" ").includes(k);
  }
}

// The chosen file, shown as it is: the portrait as an image, speech and video in a player.
function preview(name, file) {
  const el = $(`${name}-preview`);
  if (state.previews[name]) URL.revokeObjectURL(state.previews[name]);
  state.previews[name] = file ? URL.createObjectURL(file) : null;
  if (file) el.src = state.previews[name];
  else el.removeAttribute("src");
  el.hidden = !file;
}

function setupDrop(name) {
  const zone = $(`${name}-drop`);
  const input = $(`${name}-file`);
  const chosen = $(`${name}-chosen`);
  const show = () => {
    const f = input.files[0];
    chosen.textContent = f ? `${f.name} (${(f.size / 1048576).toFixed(1)} MB)` : "";
    preview(name, f);
  };
  input.addEventListener("change", show);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      show();
    }
  });
}

const LABEL = { image: "a portrait image", audio: "a speech recording", video: "a video" };

// The form as FormData, or an Error saying what is missing.
function buildForm() {
  const k = kind();
  const form = new FormData();
  form.append("kind", k);
  const limits = (state.info && state.info.limits) || {};
  for (const name of inputsOf(k)) {
    const file = $(`${name}-file`).files[0];
    const url = $(`${name}-url`).value.trim();
    if (file && url) throw new Error(`Give ${LABEL[name]} as a file or as a URL, not both.`);
    if (!file && !url) throw new Error(`Choose ${LABEL[name]} (or paste its URL).`);
    const limit = limits[`${name}_max_bytes`];
    if (file && limit && file.size > limit) {
      throw new Error(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the limit for ${LABEL[name]} is ` +
                      `${Math.round(limit / 1048576)} MB.`);
    }
    if (file) form.append(name, file, file.name);
    else form.append(`${name}_url`, url);
  }
  const seed = $("seed").value.trim();
  if (seed) form.append("seed", seed);
  if (k === "emotion") {
    form.append("emotion", $("emotion").value);
    form.append("emo_scale", $("emo-scale").value);
    form.append("min_resolution", $("min-resolution").value);
    form.append("fps", $("fps").value);
    form.append("dynamic_scale", $("dynamic-scale").value);
  } else if (k === "portrait") {
    form.append("width", $("size").value);
    form.append("height", $("size").value);
    form.append("fps", $("fps").value);
  }
  return form;
}

function describeProgress(ev) {
  if (ev.status === "PENDING") {
    if (ev.queue_position === 0) return "Next in line…";
    if (ev.queue_position > 0) return `Waiting in line: ${ev.queue_position} job(s) ahead of yours.`;
    return "Waiting for a free slot…";
  }
  let text = ev.message || "Working…";
  if (ev.stage === "rendering" && ev.total) text = `Rendering frame ${ev.done} of ${ev.total}`;
  if (ev.eta_seconds != null && ev.eta_seconds >= 0) text += ` · about ${Math.ceil(ev.eta_seconds)} s left`;
  return text;
}

function showProgress(ev) {
  $("progress").value = ev.progress || 0;
  $("status-text").textContent = `${Math.round((ev.progress || 0) * 100)} % — ${describeProgress(ev)}`;
  if (ev.status === "PROCESSING" && state.job && !state.job.started) {
    state.job.started = true;
    announce("Your job has started.");
  }
}

function videoOf(job) {
  const outputs = job.outputs || {};
  const name = outputs.video ? "video" : outputs.combined ? "combined" : Object.keys(outputs)[0];
  return name ? { name, output: outputs[name] } : null;
}

function setLinks(job) {
  const video = videoOf(job).output;
  $("download").href = video.download_url;
  const mask = (job.outputs || {}).mask;
  $("download-mask").hidden = !mask;
  if (mask) $("download-mask").href = mask.download_url;
  $("expires").textContent = `these expire ${new Date(video.expires_at).toLocaleString()}`;
}

function showResult(job, { scroll = true } = {}) {
  const video = videoOf(job);
  $("progress").value = 1;
  $("status-text").textContent = "100 % — done.";
  $("progress-section").hidden = true;
  if (!video) {
    showError("The job finished but produced no video.");
    return;
  }
  state.result = { id: job.id, renewals: 0 };
  const r = job.result || {};
  // The player's size is known before the video loads, so the scroll below lands where it should.
  $("result-video").style.aspectRatio = r.width && r.height ? `${r.width} / ${r.height}` : "";
  $("result-video").src = video.output.url;
  setLinks(job);
  const facts = r.duration_seconds ? ` · ${r.duration_seconds.toFixed(1)} s, ${r.width}×${r.height}, ${r.fps} fps` : "";
  $("engine").textContent = `Made by ${job.engine || "talkserve"}${facts}`;
  $("result-section").hidden = false;
  if (scroll) {
    // The result is what the person waited for: bring it into view and put the focus on it.
    const reduced = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    $("result-section").scrollIntoView({ block: "start", behavior: reduced ? "auto" : "smooth" });
    $("result-heading").focus({ preventScroll: true });
  }
  loadHistory();
}

// The job read again: its links are fresh (the API signs new ones on every read).
async function renewLinks() {
  const job = await api(`/v1/jobs/${state.result.id}`);
  setLinks(job);
  return videoOf(job).output;
}

// An expired link makes the player fail: take a fresh one and go on where it was.
async function onPlayerError() {
  const player = $("result-video");
  if (!state.result || !player.getAttribute("src")) return;
  if (state.result.renewals >= 2) {
    showError("The browser could not play the video; use the download link instead.");
    return;
  }
  state.result.renewals += 1;
  const at = player.currentTime;
  const playing = !player.paused;
  let fresh;
  try {
    fresh = await renewLinks();
  } catch (err) {
    showError(err.message);
    return;
  }
  player.addEventListener("loadedmetadata", () => {
    if (at) player.currentTime = at;
    if (playing) player.play().catch(() => {});
  }, { once: true });
  player.src = fresh.url;
}

// Downloads (the video, the mask) always start from a fresh link, however long the page has been open.
async function onDownload(e) {
  const link = e.currentTarget;
  if (link.dataset.renewed === "1") {
    delete link.dataset.renewed;
    return;  // the renewed link: let the browser follow it
  }
  if (!state.result) return;
  e.preventDefault();
  try {
    await renewLinks();
  } catch (err) {
    showError(err.message);
    return;
  }
  link.dataset.renewed = "1";
  link.click();
}

function finish(type, job) {
  state.following = null;
  $("submit").disabled = false;
  $("progress-section").hidden = true;
  if (type === "completed") {
    announce("Your video is ready.");
    showResult(job);
  } else if (type === "cancelled") {
    announce("The job was cancelled.");
    showNotice("The job was cancelled.");
    loadHistory();
  } else {
    const why = job.error || job.message || "unknown error";
    announce(`The job failed: ${why}`);
    showError(`The job failed: ${why}`);
    loadHistory();
  }
}

// Parse a text/event-stream body into {event, id, data} objects as they arrive.
async function* sseEvents(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const ev = { event: "message", id: null, data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") ev.data.push(val);
        else if (field === "event") ev.event = val;
        else if (field === "id") ev.id = val;
      }
      if (ev.data.length) yield { ...ev, data: ev.data.join("\n") };
    }
  }
}

// Follow a job's events; reconnect with Last-Event-ID when the connection drops.
async function follow(job) {
  const token = {};
  state.following = token;
  state.lastEventId = null;
  $("job-id").textContent = job.id;
  $("progress-section").hidden = false;
  $("result-section").hidden = true;
  showProgress(job);
  for (let attempt = 0; attempt < 30 && state.following === token; attempt++) {
    let resp;
    try {
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      resp = await fetch(`/v1/jobs/${job.id}/events`, { headers });
    } catch (e) {
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    if (resp.status === 204) break;  // the final event was seen already: read the job instead
    if (!resp.ok) {
      const body = await resp.json().catch(() => null);
      if (resp.status === 429) { await new Promise((r) => setTimeout(r, 2000)); continue; }
      throw new ApiError(resp.status, body, resp.headers);
    }
    for await (const ev of sseEvents(resp)) {
      if (state.following !== token) return;
      if (ev.id) state.lastEventId = ev.id;
      const data = JSON.parse(ev.data);
      if (ev.event === "progress") showProgress(data);
      else if (["completed", "failed", "cancelled"].includes(ev.event)) return finish(ev.event, data);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  if (state.following !== token) return;
  const final = await api(`/v1/jobs/${job.id}`);
  if (final.status === "COMPLETED") finish("completed", final);
  else if (final.status === "FAILED" || final.status === "CANCELLED") finish(final.status.toLowerCase(), final);
  else showError("Lost the connection to the server while following the job; reload the page to see it.");
}

async function submit(e) {
  e.preventDefault();
  showError("");
  showNotice("");
  let form;
  try {
    form = buildForm();
  } catch (err) {
    showError(err.message);
    return;
  }
  localStorage.setItem("talkserve-api-key", apiKey());
  $("submit").disabled = true;
  $("result-section").hidden = true;
  $("progress-section").hidden = false;
  $("progress").value = 0;
  $("status-text").textContent = "Sending your files…";
  try {
    const job = await postForm("/v1/jobs", form, (f) => {
      $("status-text").textContent = `Uploading… ${Math.round(f * 100)} %`;
    });
    state.job = { ...job, started: job.status !== "PENDING" };
    announce(state.job.started ? "Your job has started." : "Your job is queued.");
    await follow(job);
  } catch (err) {
    $("progress-section").hidden = true;
    $("submit").disabled = false;
    showError(err.message);
  }
}

async function cancel() {
  if (!state.job) return;
  try {
    await api(`/v1/jobs/${state.job.id}/cancel`, { method: "POST" });
  } catch (err) {
    showError(err.message);
  }
}

function historyItem(job) {
  const li = document.createElement("li");
  const status = job.status.toLowerCase();
  const when = new Date(job.created_at).toLocaleString();
  li.append(`${when} · ${job.kind} · `);
  const label = document.createElement("span");
  label.className = status;
  label.textContent = status;
  li.append(label);
  if (job.status === "FAILED" && job.error) {
    const reason = document.createElement("span");
    reason.className = "reason";
    reason.textContent = ` — ${job.error}`;
    li.append(reason);
  }
  if (job.status === "COMPLETED") {
    const show = document.createElement("button");
    show.type = "button";
    show.className = "link";
    show.textContent = "show";
    show.setAttribute("aria-label", `Show the ${job.kind} video of ${when}`);
    show.addEventListener("click", async () => {
      showError("");
      showNotice("");
      try {
        showResult(await api(`/v1/jobs/${job.id}`));  // read again: fresh links
      } catch (err) {
        showError(err.message);
      }
    });
    li.append(" ", show);
  }
  return li;
}

// The newest page of the caller's jobs, or (more) the next older page after those shown.
async function loadHistory(more = false) {
  const params = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  if (more && state.historyCursor) params.set("cursor", state.historyCursor);
  let page;
  try {
    page = await api(`/v1/jobs?${params}`);
  } catch (err) {
    if (more) showError(err.message);
    return;  // the first page is not important enough to show an error for
  }
  const list = $("history-list");
  if (!more) list.textContent = "";
  const first = list.children.length;
  for (const job of page.data) list.appendChild(historyItem(job));
  state.historyCursor = page.has_more ? page.next_cursor : null;
  $("history-more").hidden = !state.historyCursor;
  $("history").hidden = list.children.length === 0;
  // Keyboard users land on the first of the jobs just added, not back at the top.
  const added = list.children[first];
  if (more && added) {
    added.tabIndex = -1;
    added.focus();
  }
}

async function init() {
  $("api-key").value = localStorage.getItem("talkserve-api-key") || "";
  for (const radio of document.querySelectorAll('input[name="kind"]')) radio.addEventListener("change", updateKind);
  for (const name of ["image", "video", "audio"]) setupDrop(name);
  for (const [input, out] of [["emo-scale", "emo-scale-out"], ["dynamic-scale", "dynamic-scale-out"]]) {
    $(input).addEventListener("input", () => { $(out).textContent = $(input).value; });
  }
  $("job-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  $("result-video").addEventListener("error", onPlayerError);
  $("result-video").addEventListener("loadeddata", () => { if (state.result) state.result.renewals = 0; });
  $("download").addEventListener("click", onDownload);
  $("download-mask").addEventListener("click", onDownload);
  $("history-more").addEventListener("click", () => loadHistory(true));
  updateKind();
  try {
    state.info = await api("/v1/info");
    $("key-section").hidden = !state.info.api_keys_required && !apiKey();
  } catch (err) {
    showError(err.message);
  }
  loadHistory();
}

init();
