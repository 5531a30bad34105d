// vlserve playground: plain JavaScript against the public HTTP API (/v1/chat/completions,
// /analyze, /health, /gpu/status, /v1/models). No build step; marked and DOMPurify are
// vendored (vendor/, with their licences) for rendering Markdown answers safely.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "vlserve.apiKey";
const EXAMPLE_SCHEMA = {
  type: "object",
  properties: {
    title: { type: "string", description: "The document's title or heading" },
    date: { type: "string", description: "Any date shown, as written" },
    total: { type: "number", description: "The total amount, if any" },
  },
  required: ["title"],
};
const COLORS = ["#e6194b", "#3cb44b", "#0082c8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#d2f53c"];

const state = {
  images: [],        // {name, bytes, width, height, url (data: or http:), isRemote}
  conversation: [],  // OpenAI chat messages sent so far (images as data URLs or URLs)
  sentImages: new Set(),  // images already in the conversation: each is sent once
  controller: null,  // AbortController of the request in flight
  model: null,
  copyText: "",
};

// --- API key and requests ---------------------------------------------------------
function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

function headers(json = true) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (apiKey()) h["Authorization"] = `Bearer ${apiKey()}`;
  return h;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function errorOf(resp) {
  let message = `HTTP ${resp.status}`;
  try {
    const body = await resp.json();
    message = (body.error && body.error.message) || message;
  } catch (_) { /* not JSON */ }
  if (resp.status === 401) {
    message += " This server needs an API key: enter it under \u201cAPI key\u201d at the top.";
  } else if (resp.status === 413) {
    message = `Too large: ${message}`;
  } else if (resp.status === 429) {
    message = `The server is busy: ${message}`;
  }
  return new ApiError(resp.status, message);
}

async function getJson(path) {
  const resp = await fetch(path, { headers: headers(false) });
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

// --- header: health, model, GPUs --------------------------------------------------
async function refreshStatus() {
  const badge = $("health");
  try {
    const resp = await fetch("/health", { headers: headers(false) });
    if (resp.status === 401) {
      badge.textContent = "needs the API key";
      badge.className = "badge badge-wait";
      $("model-info").textContent = "Enter the server's API key under \u201cAPI key\u201d.";
      return;
    }
    const health = await resp.json();
    if (health.ready) {
      badge.textContent = "ready";
      badge.className = "badge badge-ok";
      state.model = state.model || (health.models || [])[0] || null;
      const where = health.engine === "local" ? `local engine on ${health.device}` : "upstream engine";
      $("model-info").textContent = `${state.model || ""} · ${where}` +
        (health.max_model_len ? ` · context ${health.max_model_len} tokens` : "") +
        (health.random_weights ? " · random weights (answers are noise)" : "");
    } else {
      badge.textContent = health.detail && health.detail.includes("loading") ? "loading" : "unavailable";
      badge.className = "badge badge-wait";
      $("model-info").textContent = health.detail || "";
    }
  } catch (_) {
    badge.textContent = "unreachable";
    badge.className = "badge badge-bad";
    $("model-info").textContent = "";
  }
  try {
    const gpu = await getJson("/gpu/status");
    $("gpu-info").textContent = gpu.available ? describeGpus(gpu.gpus || []) : "no GPU";
  } catch (err) {
    $("gpu-info").textContent = err.status === 401 ? "GPU status needs the API key" : "";
  }
}

function describeGpus(gpus) {
  const parts = gpus.map((g) => {
    const mem = g.memory_used_mib != null && g.memory_total_mib != null
      ? ` ${(g.memory_used_mib / 1024).toFixed(1)}/${(g.memory_total_mib / 1024).toFixed(0)} GiB` : "";
    const util = g.utilization_gpu_pct != null ? ` ${g.utilization_gpu_pct}%` : "";
    return `GPU${g.index}${util}${mem}`;
  });
  return parts.join(" · ");
}

// --- images in --------------------------------------------------------------------
function formatBytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function measure(url) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve({ width: img.naturalWidth, height: img.naturalHeight });
    img.onerror = () => resolve({ width: null, height: null });
    img.src = url;
  });
}

function isPdf(file) {
  return file.type === "application/pdf" || /\.pdf$/i.test(file.name || "");
}

// A PDF becomes its pages, each shown small and removable (choosing pages); a task reads
// the chosen ones from the PDF itself, at the full budget, on the server.
async function addPdf(file) {
  const url = await readAsDataUrl(file);
  const resp = await fetch("/pages", { method: "POST", headers: headers(), body: JSON.stringify({ file: url }) });
  if (!resp.ok) throw await errorOf(resp);
  const answer = await resp.json();
  for (const page of answer.pages) {
    state.images.push({ name: `${file.name} · page ${page.page}`, bytes: null, url: page.image, isRemote: false,
                        width: page.width, height: page.height, pdf: { url, name: file.name, page: page.page } });
  }
}

async function addFiles(files) {
  for (const file of files) {
    if (isPdf(file)) {
      try { await addPdf(file); } catch (err) { showError(`${file.name}: ${err.message}`); }
      continue;
    }
    if (!file.type.startsWith("image/")) {
      showError(`${file.name} is not an image or a PDF (${file.type || "unknown type"}).`);
      continue;
    }
    const url = await readAsDataUrl(file);
    const size = await measure(url);
    state.images.push({ name: file.name || "pasted image", bytes: file.size, url, isRemote: false, ...size });
  }
  renderImages();
}

async function addUrl(url) {
  const size = await measure(url);
  state.images.push({ name: url, bytes: null, url, isRemote: true, ...size });
  renderImages();
}

function renderImages() {
  const list = $("image-list");
  list.replaceChildren();
  state.images.forEach((image, index) => {
    const li = document.createElement("li");
    const thumb = document.createElement("img");
    thumb.src = image.url;
    thumb.alt = "";
    const meta = document.createElement("span");
    meta.className = "meta";
    const dims = image.width ? `${image.width}×${image.height}` : "size unknown";
    meta.textContent = `${image.name} · ${dims}${image.bytes != null ? " · " + formatBytes(image.bytes) : ""}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove ${image.name}`);
    remove.addEventListener("click", () => { state.images.splice(index, 1); renderImages(); });
    li.append(thumb, meta, remove);
    list.append(li);
  });
  showPreview(state.images[0] || null);
}

function showPreview(image, size = null) {
  $("preview").hidden = !image;
  clearOverlay();
  if (!image) return;
  $("preview-img").src = image.url;
  const w = size ? size.width : image.width;
  const h = size ? size.height : image.height;
  $("preview-caption").textContent = w ? `${image.name} · ${w}×${h} px` : image.name;
}

// --- drawing boxes and points over the preview ------------------------------------
// The SVG's viewBox is the image's own pixel grid (as /analyze reports it), stretched
// over the displayed image, so a box lands in the right place at any display size.
function clearOverlay() { $("overlay").replaceChildren(); }

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function drawOverlay(result, size) {
  const overlay = $("overlay");
  clearOverlay();
  overlay.setAttribute("viewBox", `0 0 ${size.width} ${size.height}`);
  overlay.setAttribute("preserveAspectRatio", "none");
  const fontSize = Math.max(12, Math.round(Math.max(size.width, size.height) / 28));
  const items = [];
  for (const obj of result.objects || []) if (obj.box) items.push({ label: obj.label, box: obj.box });
  for (const line of result.lines || []) if (line && line.box) items.push({ label: line.text, box: line.box });
  items.forEach((item, i) => {
    const [x1, y1, x2, y2] = item.box;
    const color = COLORS[i % COLORS.length];
    overlay.append(svg("rect", { class: "box", x: x1, y: y1, width: Math.max(0, x2 - x1),
                                 height: Math.max(0, y2 - y1), stroke: color, "data-label": item.label || "" }));
    if (item.label) addLabel(overlay, String(item.label).slice(0, 40), x1, y1, fontSize, color);
  });
  (result.points || []).forEach((p, i) => {
    const [x, y] = p.point;
    const color = COLORS[i % COLORS.length];
    overlay.append(svg("circle", { class: "point", cx: x, cy: y, r: fontSize / 2, fill: color,
                                   "data-label": p.label || "" }));
    if (p.label) addLabel(overlay, String(p.label).slice(0, 40), x + fontSize / 2, y - fontSize, fontSize, color);
  });
}

function addLabel(overlay, text, x, y, fontSize, color) {
  // White text on a dark backing with a stripe of the box's colour: readable on any image.
  const top = Math.max(0, y - fontSize * 1.3);
  const label = svg("text", { class: "label", x: x + fontSize * 0.4, y: top + fontSize, "font-size": fontSize });
  label.textContent = text;
  overlay.append(label);
  const width = label.getComputedTextLength() + fontSize * 0.8;
  const bg = svg("rect", { class: "label-bg", x, y: top, width, height: fontSize * 1.3 });
  const stripe = svg("rect", { x, y: top, width: fontSize * 0.2, height: fontSize * 1.3, fill: color });
  overlay.insertBefore(bg, label);
  overlay.insertBefore(stripe, label);
}

// --- modes and fields -------------------------------------------------------------
function mode() { return $("mode").value; }

function applyMode() {
  for (const el of document.querySelectorAll("[data-modes]")) {
    el.hidden = !el.dataset.modes.split(" ").includes(mode());
  }
  clearOverlay();
  if (mode() === "chat") renderConversation();
  else { $("result").replaceChildren(); setCopy(""); }
}

// What the key may still use this minute, from the x-ratelimit-* headers of its last
// answer (sent only when the key has per-minute limits).
function showLimits(resp) {
  const left = [];
  for (const unit of ["requests", "tokens"]) {
    const limit = resp.headers.get(`x-ratelimit-limit-${unit}`);
    const remaining = resp.headers.get(`x-ratelimit-remaining-${unit}`);
    if (limit !== null && remaining !== null) {
      left.push(`${Number(remaining).toLocaleString()} of ${Number(limit).toLocaleString()} ${unit}`);
    }
  }
  const el = $("limits-info");
  el.hidden = !left.length;
  el.textContent = left.length ? `left this minute: ${left.join(", ")}` : "";
}

function setStats(parts) { $("stats").textContent = parts.filter(Boolean).join(" · "); }

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setBusy(busy) {
  // Focus follows the enabled button, so a keyboard user never lands on <body>.
  const hadFocus = document.activeElement === $("send") || document.activeElement === $("stop");
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("stats").setAttribute("aria-busy", String(busy));  // announced once, when the answer is done
  if (hadFocus) (busy ? $("stop") : $("send")).focus();
}

function setCopy(text) {
  state.copyText = text;
  $("copy").hidden = !text;
}

function maxTokens() {
  const n = parseInt($("max-tokens").value, 10);
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

// --- chat: multi-turn, streamed ---------------------------------------------------
function renderConversation() {
  const result = $("result");
  result.replaceChildren();
  for (const message of state.conversation) result.append(turnElement(message));
}

function turnElement(message) {
  const div = document.createElement("div");
  div.className = `turn ${message.role}`;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = message.role === "user" ? "You" : "Model";
  div.append(who);
  if (message.role === "assistant") {
    const details = document.createElement("details");
    details.hidden = !message.reasoning_content;
    const summary = document.createElement("summary");
    summary.textContent = "Reasoning";
    const reasoning = document.createElement("div");
    reasoning.className = "text reasoning";
    reasoning.textContent = message.reasoning_content || "";
    details.append(summary, reasoning);
    div.append(details);
  }
  const text = document.createElement("div");
  text.className = "text";
  const content = message.content;
  text.textContent = typeof content === "string" ? content
    : (content || []).filter((p) => p.type === "text").map((p) => p.text).join("\n");
  const images = typeof content === "string" ? 0 : (content || []).filter((p) => p.type === "image_url").length;
  if (images) text.textContent += `  [${images} image${images > 1 ? "s" : ""}]`;
  div.append(text);
  return div;
}

async function sendChat() {
  const text = $("message").value.trim();
  if (!text && !state.images.length) { showError("Write a message (or add an image) first."); return; }
  const fresh = state.images.filter((image) => !state.sentImages.has(image.url));
  const turnsBefore = state.conversation.length;
  // Pages of a PDF go as the PDF itself (a file part, read at the full budget), once.
  const content = fresh.filter((image) => !image.pdf).map((image) => ({ type: "image_url", image_url: { url: image.url } }));
  for (const pdf of new Map(fresh.filter((i) => i.pdf).map((i) => [i.pdf.url, i.pdf])).values()) {
    content.push({ type: "file", file: { file_data: pdf.url, filename: pdf.name } });
  }
  fresh.forEach((image) => state.sentImages.add(image.url));
  content.push({ type: "text", text });
  state.conversation.push({ role: "user", content });
  $("message").value = "";
  renderConversation();
  const answer = { role: "assistant", content: "", reasoning_content: "" };
  const el = turnElement(answer);
  $("result").append(el);
  const contentEl = el.querySelector(".text:not(.reasoning)");
  const reasoningEl = el.querySelector(".reasoning");
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  let finish = null;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: state.controller.signal,
      body: JSON.stringify({ model: state.model, messages: state.conversation, stream: true,
                             stream_options: { include_usage: true }, max_tokens: maxTokens() }),
    });
    showLimits(resp);
    if (!resp.ok) throw await errorOf(resp);
    for await (const event of sseEvents(resp)) {
      if (!event || typeof event !== "object") continue;
      if (event.error) throw new ApiError(500, event.error.message || "The stream failed.");
      if (event.usage) usage = event.usage;
      for (const choice of event.choices || []) {
        const delta = choice.delta || {};
        if ((delta.content || delta.reasoning_content) && firstToken === null) firstToken = performance.now();
        if (delta.reasoning_content) {
          answer.reasoning_content += delta.reasoning_content;
          reasoningEl.textContent = answer.reasoning_content;
          reasoningEl.parentElement.hidden = false;
        }
        if (delta.content) {
          answer.content += delta.content;
          contentEl.textContent = answer.content;
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      setStats(liveStats(started, firstToken, usage));
    }
  } catch (err) {
    if (err.name === "AbortError") finish = "stopped";
    else { showError(err.message); }
  } finally {
    if (answer.content || answer.reasoning_content) {
      state.conversation.push({ role: "assistant", content: answer.content });
    } else {  // nothing came back: the turn did not happen (its images may be sent again)
      state.conversation.length = turnsBefore;
      fresh.forEach((image) => state.sentImages.delete(image.url));
      renderConversation();
    }
    setCopy(answer.content);
    const ended = performance.now();
    setStats([...liveStats(started, firstToken, usage, ended), finish && `finish: ${finish}`]);
  }
}

function liveStats(started, firstToken, usage, ended = null) {
  const now = ended || performance.now();
  const parts = [state.model, `latency ${((now - started) / 1000).toFixed(2)} s`];
  if (firstToken !== null) parts.push(`first token ${((firstToken - started) / 1000).toFixed(2)} s`);
  if (usage && firstToken !== null && now > firstToken) {
    parts.push(`${(usage.completion_tokens / ((now - firstToken) / 1000)).toFixed(1)} tokens/s`);
  }
  if (usage) parts.push(`${usage.prompt_tokens} in / ${usage.completion_tokens} out`);
  return parts;
}

async function* sseEvents(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const raw = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      for (const line of raw.split(/\r?\n/)) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        try { yield JSON.parse(data); } catch (_) { /* not JSON: skip */ }
      }
    }
  }
}

// --- analysis tasks ---------------------------------------------------------------
// The pages still listed of the first image's PDF, as /analyze's `pages`.
function chosenPages(pdf) {
  return state.images.filter((i) => i.pdf && i.pdf.url === pdf.url).map((i) => i.pdf.page).join(",");
}

function analyzeBody(task) {
  const body = { task, model: state.model || undefined, max_tokens: maxTokens() };
  const pdf = state.images[0].pdf;
  if (task === "compare") body.images = state.images.map((i) => i.url);
  else if (pdf) Object.assign(body, { image: pdf.url, pages: chosenPages(pdf), stream: true });
  else body.image = state.images[0].url;
  const value = (id) => $(id).value.trim();
  if (["detect", "point"].includes(task) && value("objects")) {
    body.objects = value("objects").split(",").map((s) => s.trim()).filter(Boolean);
  }
  if (["qa", "compare"].includes(task)) body.question = value("question");
  if (["caption", "describe", "qa", "compare"].includes(task) && value("language")) body.language = value("language");
  if (task === "ocr" && $("ocr-boxes").checked) body.boxes = true;
  if (task === "document") body.format = $("doc-format").value;
  if (task === "extract") body.schema = JSON.parse($("schema").value);
  return body;
}

function checkTaskInput(task) {
  if (!state.images.length) return "Add an image first.";
  if (task === "compare" && state.images.length < 2) return "Compare needs at least two images.";
  if (["qa", "compare"].includes(task) && !$("question").value.trim()) return "Write the question first.";
  if (task === "extract") {
    try { JSON.parse($("schema").value); } catch (err) { return `The schema is not valid JSON: ${err.message}`; }
  }
  return null;
}

async function sendTask(task) {
  const problem = checkTaskInput(task);
  if (problem) { showError(problem); return; }
  $("result").replaceChildren();
  setCopy("");
  const started = performance.now();
  try {
    const body = analyzeBody(task);
    const resp = await fetch("/analyze", { method: "POST", headers: headers(), signal: state.controller.signal,
                                           body: JSON.stringify(body) });
    showLimits(resp);
    if (!resp.ok) throw await errorOf(resp);
    const answer = body.stream ? await readPages(task, resp) : await resp.json();
    const elapsed = (performance.now() - started) / 1000;
    const tokensPerS = answer.usage && answer.latency_ms
      ? `${(answer.usage.completion_tokens / (answer.latency_ms / 1000)).toFixed(1)} tokens/s` : null;
    setStats([answer.model, `latency ${elapsed.toFixed(2)} s`, tokensPerS,
              answer.usage && `${answer.usage.prompt_tokens} in / ${answer.usage.completion_tokens} out`]);
    showResult(task, answer);
  } catch (err) {
    if (err.name === "AbortError") setStats(["stopped"]);
    else showError(err.message);
  }
}

// A PDF's pages arrive one event each as they are done; the last event is the whole answer.
async function readPages(task, resp) {
  const pages = document.createElement("div");
  pages.className = "pages";
  $("result").append(pages);
  for await (const event of sseEvents(resp)) {
    if (!event || typeof event !== "object") continue;
    if (event.error && !event.page) throw new ApiError(500, event.error.message || "The stream failed.");
    if (event.task) { pages.remove(); return event; }
    pages.append(pageElement(task, event));
    setStats([`${pages.children.length} page(s) read`]);
  }
  throw new ApiError(500, "The answer ended before the whole document.");
}

function pageElement(task, page) {
  const section = document.createElement("section");
  section.className = "page-result";
  section.dataset.page = page.page;
  const title = document.createElement("h3");
  title.textContent = `Page ${page.page}`;
  section.append(title);
  if (page.error) {
    section.append(pre(page.error.message || "failed"));
    return section;
  }
  const shown = state.images.find((i) => i.pdf && i.pdf.page === page.page);
  const data = page.result || {};
  if (shown && (["detect", "point"].includes(task) || (data.lines || []).some((l) => l && l.box))) {
    const look = document.createElement("button");
    look.type = "button";
    look.className = "secondary";
    look.textContent = "Show on the page";
    look.addEventListener("click", () => { showPreview(shown, page.image); drawOverlay(data, page.image); });
    section.append(look);
  }
  const text = data.markdown !== undefined ? data.markdown : (data.text !== undefined ? data.text : null);
  section.append(text !== null ? markdown(text) : pre(JSON.stringify(data, null, 2)));
  return section;
}

function showResult(task, answer) {
  const result = $("result");
  if (answer.pages) {  // a PDF: its pages above, the whole document below
    const pages = document.createElement("div");
    pages.className = "pages";
    for (const page of [...answer.pages].sort((a, b) => a.page - b.page)) pages.append(pageElement(task, page));
    const whole = document.createElement("h3");
    whole.textContent = answer.pages_failed ? `Whole document (${answer.pages_failed} page(s) failed)`
      : "Whole document";
    result.append(pages, whole);
    if (Array.isArray(answer.result)) {  // a task without one merged result: the pages say it all
      setCopy(JSON.stringify(answer.result, null, 2));
      return;
    }
  }
  const data = answer.result || {};
  if (["detect", "point"].includes(task) || (task === "ocr" && (data.lines || []).some((l) => l && l.box))) {
    showPreview(state.images[0], answer.image);
    drawOverlay(data, answer.image);
  }
  if (task === "extract") {
    result.append(pre(JSON.stringify(data, null, 2)));
    setCopy(JSON.stringify(data, null, 2));
  } else if (task === "document" && data.html !== undefined) {
    const frame = document.createElement("iframe");
    frame.className = "html-result";
    frame.setAttribute("sandbox", "");  // the model's HTML, without scripts...
    frame.title = "The document as HTML";
    // ...and without network: a sandbox alone still loads images and styles.
    frame.srcdoc = '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; ' +
      'style-src \'unsafe-inline\'; img-src data:">' + data.html;
    result.append(frame);
    setCopy(data.html);
  } else if (task === "document" || task === "ocr") {
    const text = data.markdown !== undefined ? data.markdown : (data.text || "");
    result.append(markdown(text));
    setCopy(text);
  } else if (["detect", "point"].includes(task)) {
    const items = data.objects || data.points || [];
    const p = document.createElement("p");
    p.textContent = items.length ? `${items.length} found: ` + items.map((i) => i.label).join(", ")
      : (data.parsed === false ? "The model's answer held no positions." : "Nothing found.");
    result.append(p, pre(JSON.stringify(data, null, 2)));
    setCopy(JSON.stringify(data, null, 2));
  } else {
    const text = data.caption || data.description || data.answer || answer.text;
    result.append(markdown(text));
    setCopy(text);
  }
  if (answer.reasoning) {
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = "Reasoning";
    details.append(summary, pre(answer.reasoning));
    result.prepend(details);
  }
}

function pre(text) {
  const el = document.createElement("pre");
  el.className = "json mono";
  el.textContent = text;
  return el;
}

function markdown(text) {
  const div = document.createElement("div");
  div.className = "rendered";
  // The model's text is untrusted: no styles, forms, ids or remote images.
  div.innerHTML = DOMPurify.sanitize(marked.parse(text || ""), {
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "link", "meta"],
    FORBID_ATTR: ["id", "name", "style", "srcset"],
  });
  for (const img of div.querySelectorAll("img")) {
    if (!(img.getAttribute("src") || "").startsWith("data:")) img.remove();
  }
  return div;
}

// --- wiring -----------------------------------------------------------------------
async function send(event) {
  event.preventDefault();
  showError("");
  if (state.controller) return;
  state.controller = new AbortController();
  setBusy(true);
  try {
    if (!state.model) await loadModel();
    if (mode() === "chat") await sendChat();
    else await sendTask(mode());
  } catch (err) {
    showError(err.message);
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

async function loadModel() {
  const models = await getJson("/v1/models");
  state.model = (models.data || [])[0] ? models.data[0].id : null;
  if (!state.model) throw new Error("The server lists no model (GET /v1/models is empty).");
}

function init() {
  $("api-key").value = apiKey();
  $("api-key").addEventListener("change", (e) => {
    sessionStorage.setItem(KEY_STORAGE, e.target.value.trim());
    refreshStatus();
  });
  $("schema").value = JSON.stringify(EXAMPLE_SCHEMA, null, 2);
  $("schema-example").addEventListener("click", () => { $("schema").value = JSON.stringify(EXAMPLE_SCHEMA, null, 2); });
  $("mode").addEventListener("change", applyMode);
  $("ask-form").addEventListener("submit", send);
  $("message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("ask-form").requestSubmit();
  });
  $("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
  $("new-chat").addEventListener("click", () => {
    state.conversation = [];
    state.sentImages.clear();
    renderConversation();
    setStats([]);
  });
  $("copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(state.copyText);
    } catch (_) {  // no clipboard API on plain http:// to another host: the old way
      const area = document.createElement("textarea");
      area.value = state.copyText;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    $("copy").textContent = "Copied";
    setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
  });

  const zone = $("drop-zone");
  const input = $("file-input");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  input.addEventListener("change", () => { addFiles([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("dragging");
    addFiles([...e.dataTransfer.files]);
  });
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])];
    if (files.length) { e.preventDefault(); addFiles(files); }
  });
  $("url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const url = $("image-url").value.trim();
    if (!/^https?:\/\//.test(url)) { showError("An image URL starts with http:// or https://."); return; }
    $("image-url").value = "";
    addUrl(url);
  });

  applyMode();
  refreshStatus();
  setInterval(refreshStatus, 5000);
}

init();
