// chatlane web chat: streams one turn per message from POST /api/chat (NDJSON events).
// A file (the attach button, drag and drop, or paste) goes with the message as
// multipart/form-data; files over the server's max_bytes are refused here first.
// Everything the user or the model writes goes in through textContent; only the
// server-sanitized `html` of a finished answer is inserted as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const messages = $("messages"), input = $("input"), send = $("send"), form = $("composer");
const fileInput = $("file"), chip = $("attachment"), drop = $("drop");
let maxBytes = 10 * 1024 * 1024;  // until /api/info says (agent.media.max_bytes)
let pending = null;  // the file to send with the next message

function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Array.from({ length: 16 }, () => Math.floor(Math.random() * 256).toString(16).padStart(2, "0")).join("");
}
let sessionId = localStorage.getItem("chatlane-session") || newId();
localStorage.setItem("chatlane-session", sessionId);

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
function add(node) { messages.appendChild(node); messages.scrollTop = messages.scrollHeight; return node; }

// With CHATLANE_WEB_TOKEN set, the server wants the token: asked once, kept in this browser.
async function api(path, options) {
  for (let attempt = 0; ; attempt++) {
    const headers = Object.assign({}, (options && options.headers) || {});
    const token = localStorage.getItem("chatlane-token");
    if (token) headers["Authorization"] = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers: headers, credentials: "same-origin" }));
    if (response.status !== 401 || attempt > 0) return response;
    const given = window.prompt("This chat needs its access token:");
    if (!given) return response;
    localStorage.setItem("chatlane-token", given.trim());
  }
}

async function loadInfo() {
  try {
    const info = await (await api("/api/info")).json();
    $("model").textContent = info.model || "";
    if (info.max_bytes) maxBytes = info.max_bytes;
    if (info.demo) {
      const banner = $("banner");
      banner.textContent = "Offline demo model: " + info.demo;
      banner.hidden = false;
    }
  } catch (e) { /* the chat still works without the header */ }
}

class Turn {
  constructor() {
    this.box = add(el("div", "msg bot"));
    this.status = this.box.appendChild(el("div", "queue"));
    this.reasoning = null;
    this.answer = this.box.appendChild(el("div", "answer streaming"));
    this.tools = {};
  }
  reasoningBox(open) {
    if (!this.reasoning) {
      const details = el("details", "reasoning");
      details.appendChild(el("summary", null, "Reasoning"));
      this.reasoningText = details.appendChild(el("div", "content"));
      this.box.insertBefore(details, this.answer);
      this.reasoning = details;
    }
    if (open) this.reasoning.open = true;
    return this.reasoningText;
  }
  handle(event) {
    const data = event.data || {};
    if (event.type !== "queue") this.status.textContent = "";
    switch (event.type) {
      case "queue": this.status.textContent = "Queued — position " + data.position; break;
      case "thinking":
        if (data.mode === "on") this.reasoningBox(false).textContent = data.content;
        else this.reasoningBox(true).textContent += data.content;
        break;
      case "text": this.answer.textContent += data.delta; break;
      case "tool_call": {
        const card = el("details", "tool");
        const args = data.arguments && Object.keys(data.arguments).length ? " " + Object.values(data.arguments).join(" ") : "";
        card.appendChild(el("summary", null, "🔧 " + data.name + args));
        this.tools[data.id] = card;
        this.box.insertBefore(card, this.answer);
        break;
      }
      case "tool_result": {
        const card = this.tools[data.id] || this.box.insertBefore(el("details", "tool"), this.answer);
        if (data.display) card.appendChild(el("pre", null, data.display));
        if (data.is_error) card.classList.add("failed");
        break;
      }
      case "failover": this.box.insertBefore(el("div", "failover", "switched from " + data.from + " to " + data.to + ": " + data.reason), this.answer); break;
      case "compaction": break;
      case "done":
        this.answer.classList.remove("streaming");
        if (typeof data.html === "string") this.answer.innerHTML = data.html;
        if (data.thinking) this.reasoningBox(false).textContent = data.thinking;
        break;
      case "command":
        this.answer.classList.remove("streaming");
        this.answer.textContent = data.text;
        break;
      case "error": add(el("div", "msg error", data.message || "Something went wrong.")); break;
    }
    messages.scrollTop = messages.scrollHeight;
  }
}

// The server's own sentences (bot/media.py), so the person reads the same either way.
function sizeText(count) {
  return count >= 1024 * 1024 ? (count / 1024 / 1024).toFixed(0) + " MB" : Math.floor(count / 1024) + " KB";
}
function attach(file) {
  if (!file) return;
  if (file.size > maxBytes) {
    add(el("div", "msg error", "That file is too big for me: the limit is " + sizeText(maxBytes) + "."));
    return;
  }
  if (file.size === 0) { add(el("div", "msg error", "That file is empty.")); return; }
  pending = file;
  $("attachment-name").textContent = "📎 " + file.name + " (" + sizeText(Math.max(file.size, 1024)) + ")";
  chip.hidden = false;
  input.focus();
}
function detach() { pending = null; chip.hidden = true; fileInput.value = ""; }

function userMessage(text, file) {
  const box = add(el("div", "msg user"));
  if (file) {
    if (file.type.startsWith("image/")) {  // a data: URL: the CSP allows no blob: images
      const img = box.appendChild(el("img", "preview"));
      img.alt = file.name;
      const reader = new FileReader();
      reader.onload = () => { img.src = reader.result; };
      reader.readAsDataURL(file);
    }
    box.appendChild(el("div", "file", "📎 " + file.name));
  }
  if (text) box.appendChild(el("div", null, text));
}

function request(text, file) {
  if (!file) {
    return { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ session_id: sessionId, text: text }) };
  }
  const body = new FormData();  // the browser sets the multipart Content-Type
  body.append("session_id", sessionId);
  body.append("text", text);
  body.append("file", file, file.name);
  return { method: "POST", headers: { "X-Chatlane-Upload": "1" }, body: body };
}

async function sendMessage(text, file) {
  userMessage(text, file);
  const turn = new Turn();
  send.disabled = true;
  try {
    const response = await api("/api/chat", request(text, file));
    if (!response.ok) {
      add(el("div", "msg error", (await response.text()) || "The server refused the message."));
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) turn.handle(JSON.parse(line));
      }
    }
  } catch (e) {
    add(el("div", "msg error", "Lost the connection to the server. Try again."));
  } finally {
    send.disabled = false;
    input.focus();
  }
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value.trim(), file = pending;
  if ((!text && !file) || send.disabled) return;
  input.value = "";
  detach();
  sendMessage(text, file);
});
$("attach").addEventListener("click", () => fileInput.click());
$("detach").addEventListener("click", detach);
fileInput.addEventListener("change", () => { attach(fileInput.files[0]); fileInput.value = ""; });
input.addEventListener("paste", (e) => {
  const files = e.clipboardData && e.clipboardData.files;
  if (files && files.length) { e.preventDefault(); attach(files[0]); }
});
const carriesFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
document.addEventListener("dragover", (e) => {
  if (!carriesFiles(e)) return;
  e.preventDefault();
  drop.hidden = false;
});
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.hidden = true; });
document.addEventListener("drop", (e) => {
  drop.hidden = true;
  if (!carriesFiles(e)) return;
  e.preventDefault();
  attach(e.dataTransfer.files[0]);
});
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
});
$("new-chat").addEventListener("click", async () => {
  await api("/api/chat", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ session_id: sessionId, text: "/new" }) });
  sessionId = newId();
  localStorage.setItem("chatlane-session", sessionId);
  messages.textContent = "";
  input.focus();
});
loadInfo();
input.focus();
