// mmx camera page: this browser joins `mmx serve` as a camera, speaking the device protocol
// of docs/device-protocol.md (the same as the iPhone app and `mmx device`).
//
// The camera link carries its token in the URL fragment (#token=…), which never reaches a
// server log or a Referer header. The device id is kept in localStorage: a reloaded page is
// the same camera. Keys: F flip, S still, 1 / 2 / 0 zoom 1x / 2x / 0.5x.

import { Capture } from "./capture.js";
import { Outbox, sha256Hex } from "./outbox.js";
import { WhipPublisher } from "./whip.js";

const APP = "mmx-camera-page 0.1";
const PREVIEW_FPS = 10;
const MAX_BUFFERED = 512 * 1024;  // skip a preview while the socket still holds this much
const $ = (id) => document.getElementById(id);

const fragment = new URLSearchParams(location.hash.slice(1));
const token = fragment.get("token");
// "&slot=N" makes one browser several cameras (one tab each: a laptop with several webcams,
// or the benchmark's 8 tabs); each slot keeps its own device id.
const slot = /^[0-9]{1,3}$/.test(fragment.get("slot") || "") ? fragment.get("slot") : null;
const DEVICE_KEY = slot ? `mmx.device.${slot}` : "mmx.device";
const capture = new Capture($("view"));
const outbox = new Outbox(token);
let ws = null, camera = null, heartbeat_s = 1, timers = [], backoff = 0.25, stopped = false;
let program = false, proposed = false, relayOn = false, wakeLock = null, battery = null;
const publisher = new WhipPublisher(token, (s) => show("relay", `hero feed: ${s}`));

function show(id, text) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("hidden", !text);
}

function status(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = `status ${kind}`;
}

function message(text) { show("message", text); }

function deviceId() {
  let id = localStorage.getItem(DEVICE_KEY);
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(10));
    id = "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

function platform() {
  const ua = navigator.userAgent;
  const m = ua.match(/(iPhone|iPad|Android[^;)]*|Mac OS X [\d_]+|Windows NT [\d.]+|Linux [^;)]*|CrOS [^;)]*)/);
  const browser = /Edg\//.test(ua) ? "Edge" : /Chrome\//.test(ua) ? "Chrome" : /Firefox\//.test(ua) ? "Firefox"
    : /Safari\//.test(ua) ? "Safari" : "browser";
  const os = m ? m[1].replace(/_/g, ".") : "unknown";
  return { model: /iPhone|iPad/.test(os) ? os : `${browser} on ${os.split(" ")[0]}`, platform: os, browser };
}

function state() {
  return { facing: capture.facing, zoom: capture.zoom, battery: battery ? Math.round(battery.level * 100) / 100 : null,
           thermal: "nominal" };
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

function renderTally() {
  const frame = $("frame");
  frame.className = program ? "tally-program" : proposed ? "tally-preview" : "tally-none";
  const t = $("tally");
  t.className = `badge ${program ? "program" : proposed ? "preview" : "hidden"}`;
  t.textContent = program ? "ON AIR" : proposed ? "GHOST NEXT" : "";
}

function renderLens() {
  show("lens", `${capture.facing} ${capture.zoom}×`);
  const zooms = $("zooms");
  zooms.replaceChildren();
  for (const z of capture.lenses[capture.facing] || [1]) {
    const b = document.createElement("button");
    b.textContent = `${z}×`;
    b.className = z === capture.zoom ? "on" : "";
    b.onclick = () => localZoom(z);
    zooms.append(b);
  }
  $("flip").disabled = capture.facings.length < 2;
}

function hello() {
  const p = platform();
  const lenses = {};
  for (const f of capture.facings) lenses[f] = capture.lenses[f] || [1];
  return { t: "hello", token, device: deviceId(), name: localStorage.getItem("mmx.name") || `${p.model} ${deviceId().slice(4, 8)}`,
           model: p.model, platform: p.platform, app: APP, ts: Date.now() / 1000,
           capabilities: { facings: capture.facings, lenses, still: true, preview: true, pose: false },
           state: state() };
}

function connect() {
  if (stopped) return;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/devices/ws?token=${encodeURIComponent(token)}`;
  status(camera ? "reconnecting…" : "connecting…", "away");
  const sock = new WebSocket(url);
  sock.binaryType = "arraybuffer";
  ws = sock;
  sock.onopen = () => sock.send(JSON.stringify(hello()));
  sock.onmessage = (ev) => { if (typeof ev.data === "string") onMessage(JSON.parse(ev.data)); };
  sock.onclose = (ev) => {
    if (ws !== sock) return;
    ws = null;
    stopTimers();
    if (ev.code === 4401) return halt("This camera link was refused or revoked: ask the operator for a new one.");
    if (ev.code === 4409) return halt("Another page joined as this camera; this one has stopped. Reload to take over.");
    if (ev.code === 4400) return halt(`The server refused this camera: ${ev.reason || "malformed hello"}.`);
    const wait = backoff * (0.8 + Math.random() * 0.4);
    backoff = Math.min(backoff * 2, 5);
    status(`server away — reconnecting in ${wait.toFixed(1)} s`, "away");
    setTimeout(connect, wait * 1000);
  };
}

function halt(text) {
  stopped = true;
  status("stopped", "stopped");
  message(text);
  publisher.stop();
}

function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

async function onMessage(m) {
  switch (m.t) {
    case "welcome":
      camera = m.camera;
      heartbeat_s = m.heartbeat_s || 1;
      backoff = 0.25;
      program = !!m.program;
      proposed = false;
      relayOn = !!m.relay;
      show("camera", camera);
      show("placement", m.placement && m.placement.label ? m.placement.label : "");
      status("live", "live");
      message("");
      renderTally();
      startTimers();
      outbox.flush();
      if (relayOn) publisher.start(camera, capture.track).catch((e) => show("relay", `hero feed: ${e.message}`));
      break;
    case "command":
      await onCommand(m);
      break;
    case "tally":
      program = !!m.program;
      proposed = !!m.preview && !program;
      renderTally();
      break;
    case "placement":
      show("placement", m.placement && m.placement.label ? m.placement.label : "");
      break;
    case "error":
      console.warn("server:", m.error);
      break;
  }
}

function startTimers() {
  stopTimers();
  timers.push(setInterval(() => send({ t: "heartbeat", ts: Date.now() / 1000 }), heartbeat_s * 1000));
  let busy = false;
  timers.push(setInterval(async () => {
    if (busy || !ws || ws.readyState !== WebSocket.OPEN || ws.bufferedAmount > MAX_BUFFERED) return;
    busy = true;
    try {
      const ts = Date.now() / 1000;
      const jpeg = await capture.preview();
      if (jpeg && ws && ws.readyState === WebSocket.OPEN) {
        const bytes = await jpeg.arrayBuffer();
        send({ t: "frame", ts });
        ws.send(bytes);
      }
    } finally {
      busy = false;
    }
  }, 1000 / PREVIEW_FPS));
}

async function onCommand(m) {
  const ack = { t: "ack", command_id: m.command_id, ok: true, error: null };
  try {
    if (m.command === "flip") {
      await capture.flip();
      await publisher.replace(capture.track);
    } else if (m.command === "zoom") {
      await capture.setZoom(Number(m.args && m.args.zoom));
    } else if (m.command === "still") {
      await takeStill(m.command_id);
    } else {
      throw new Error(`unknown command ${m.command}`);
    }
  } catch (err) {
    ack.ok = false;
    ack.error = String(err && err.message ? err.message : err);
  }
  ack.state = state();
  send(ack);
  renderLens();
}

async function takeStill(stillId) {
  const blob = await capture.still();
  const sha256 = await sha256Hex(blob);
  const item = { still: stillId, camera, sha256, blob };
  await outbox.add(item);
  send({ t: "still.ready", command_id: stillId, still: stillId, sha256, bytes: blob.size });
  const uploaded = await outbox.flush();
  if (!uploaded) throw new Error("still kept on the camera; it is uploaded when the server is back");
}

async function localZoom(z) {
  try {
    await capture.setZoom(z);
    send({ t: "state", ...state() });
  } catch (err) {
    message(err.message);
    setTimeout(() => message(""), 2500);
  }
  renderLens();
}

async function localFlip() {
  if (capture.facings.length < 2) return;
  await capture.flip();
  await publisher.replace(capture.track);
  send({ t: "state", ...state() });
  renderLens();
}

async function localStill() {
  if (!camera) return;
  const id = `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  await takeStill(id).catch((err) => message(err.message));
}

async function keepAwake() {
  if (!("wakeLock" in navigator) || document.visibilityState !== "visible") return;
  try { wakeLock = await navigator.wakeLock.request("screen"); } catch (err) { wakeLock = null; }
}

function keys(ev) {
  if (ev.target.tagName === "INPUT" || ev.metaKey || ev.ctrlKey || ev.altKey) return;
  const k = ev.key.toLowerCase();
  if (k === "f") localFlip();
  else if (k === "s") localStill();
  else if (k === "1") localZoom(1);
  else if (k === "2") localZoom(2);
  else if (k === "0") localZoom(0.5);
  else return;
  ev.preventDefault();
}

async function start() {
  $("start").classList.add("hidden");
  try {
    await capture.open("back");
  } catch (err) {
    if (err && err.name === "NotAllowedError") {
      message("The camera is blocked: allow it in the browser's site settings, then tap Start.");
      $("start").classList.remove("hidden");
      return;
    }
    message(`Cannot open the camera: ${err && err.message ? err.message : err}` +
            (window.isSecureContext ? "" : " — this page needs HTTPS (mmx serve --lan)."));
    $("start").classList.remove("hidden");
    return;
  }
  renderLens();
  if (navigator.getBattery) battery = await navigator.getBattery().catch(() => null);
  keepAwake();
  connect();
}

outbox.onChange = (n) => show("queue", n ? `${n} still${n > 1 ? "s" : ""} waiting for the server` : "");
document.addEventListener("visibilitychange", keepAwake);
document.addEventListener("keydown", keys);
$("flip").onclick = localFlip;
$("still").onclick = localStill;
$("start").onclick = start;
window.mmxCamera = { get camera() { return camera; }, capture, outbox, get connected() { return !!ws && ws.readyState === 1 && !!camera; } };

if (!token) {
  status("no token", "stopped");
  message("Open the camera link that mmx serve prints or shows as a QR code: it ends in #token=…");
} else {
  outbox.count().then((n) => outbox.onChange(n));
  start();
}
