// mmx Live Director: the operator console of `mmx serve`. Plain JavaScript modules, no
// build step. It follows GET /v1/events (resuming with since= after a drop, never a reload),
// keeps GET /v1/state fresh, shows every camera over one preview WebSocket, and acts only
// through the public API (director, cameras, ghost, session).

import { api, backoffMs, idOrder, setUnauthorizedHandler } from "./api.js";
import { CoverageMap } from "./coverage.js";
import { EventLog } from "./event-log.js";
import { GhostBanner } from "./ghost-banner.js";
import { Multiview } from "./multiview.js";
import { SessionPanel } from "./session.js";

const POLL_MS = 2000;
const IDS_KEPT = 2000;
const LOG_BACKLOG = 60;

const $ = (sel) => document.querySelector(sel);

const app = {
  state: null,
  cameras: new Map(),
  program: null,
  hold: null,
  mode: null,
  stateSeq: 0,
  lastSeq: null,
  clockOffset: 0,      // server clock minus this browser's, seconds
  bestRtt: Infinity,
  events: { up: false, attempt: 0, retryAt: 0, ctrl: null, received: 0 },
  results: new Map(),  // camera -> {ok, text, at}
  seenIds: new Set(),
  keyLog: [],          // [{key, t}] local ms of each handled key, for the bench
  loggedIn: false,
  started: false,
  renderQueued: false,

  serverNow() { return Date.now() / 1000 + this.clockOffset; },
};
window.mmx = app;

// ------------------------------------------------------------------ login
function showLogin(message) {
  app.loggedIn = false;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#login").dataset.error = message ? "true" : "false";
  $("#login-token").focus();
  setConnection("login", "not logged in");
}

setUnauthorizedHandler(() => { if (app.loggedIn) showLogin("The server no longer accepts this session (restarted with a new token?). Enter the token again."); });

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("#login-token").value.trim();
  try {
    const resp = await fetch("/v1/login", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
    });
    if (resp.status === 204) {
      $("#login").hidden = true;
      $("#login-token").value = "";
      await boot();
      return;
    }
    const body = await resp.json().catch(() => ({}));
    showLogin(resp.status === 401 ? "Wrong token. Use the token mmx serve printed when it started." : body.error || `login failed (${resp.status})`);
  } catch (err) {
    showLogin(`The server is unreachable: ${err.message}`);
  }
});

// ------------------------------------------------------------------ state
async function refreshState() {
  const t0 = Date.now();
  const s = await api("GET", "/v1/state");
  const t1 = Date.now();
  const rtt = t1 - t0;
  if (typeof s.now === "number" && (rtt <= app.bestRtt * 1.5 || rtt < 50)) {
    app.bestRtt = Math.min(app.bestRtt, rtt);
    app.clockOffset = s.now - (t0 + t1) / 2000;
  }
  applyState(s);
  return s;
}

function applyState(s) {
  app.state = s;
  app.program = s.program;
  app.hold = s.hold;
  app.mode = s.mode;
  app.stateSeq = s.seq;
  const seen = new Set();
  for (const c of s.cameras) { app.cameras.set(c.camera, c); seen.add(c.camera); }
  for (const id of [...app.cameras.keys()]) if (!seen.has(id)) app.cameras.delete(id);
  app.coverage.invalidate();
  app.render();
}

let refreshTimer = null;
app.refreshSoon = (ms = 250) => {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try { await refreshState(); } catch { /* the poll reports it */ }
  }, ms);
};

// ------------------------------------------------------------------ the event stream
function applyEvent(ev) {
  const d = ev.data || {};
  const cam = d.camera ? app.cameras.get(d.camera) : null;
  switch (ev.type) {
    case "director.cut": app.program = d.to; break;
    case "director.hold": app.hold = d.camera; break;
    case "director.release": app.hold = null; break;
    case "director.mode": app.mode = d.mode; break;
    case "camera.joined":
      app.cameras.set(d.camera, { ...(cam || {}), ...d, status: "live", last_seen: ev.ts });
      app.refreshSoon();
      break;
    case "camera.left":
      if (cam) cam.status = "lost";
      app.refreshSoon();
      break;
    case "camera.changed":
      if (cam) Object.assign(cam, d);
      app.refreshSoon();
      break;
    case "camera.ack":
      if (d.camera) {
        const ok = !!d.ok;
        app.result(d.camera, ok, `${d.command} ${ok ? "ok" : "failed: " + (d.error || "?")}${d.latency_ms != null ? ` (${Math.round(d.latency_ms)} ms)` : ""}`);
      }
      app.refreshSoon();
      break;
    case "music.cue":
      if (app.state) app.state.music = { ...d, ts: ev.ts };
      break;
    default:
      if (/^(session|still|recording)\./.test(ev.type)) app.refreshSoon();
  }
  if (app.state) { app.state.program = app.program; app.state.hold = app.hold; app.state.mode = app.mode; }
  if (ev.type.startsWith("camera.")) app.coverage.invalidate();
}

function onEvent(ev) {
  if (!ev || typeof ev.type !== "string") return;
  if (ev.id) {
    if (app.seenIds.has(ev.id)) return;
    app.seenIds.add(ev.id);
    if (app.seenIds.size > IDS_KEPT) app.seenIds.delete(app.seenIds.values().next().value);
  }
  app.events.received++;
  if (typeof ev.seq === "number") app.lastSeq = app.lastSeq == null ? ev.seq : Math.max(app.lastSeq, ev.seq);
  app.log.add(ev);
  const fresh = typeof ev.seq !== "number" || ev.seq > app.stateSeq;
  if (fresh) applyEvent(ev);
  if (fresh || ev.type.startsWith("ghost.") || ev.type === "director.cut") app.banner.onEvent(ev);
  app.render();
}

async function followEvents() {
  app.events.running = true;
  try { await followLoop(); } finally { app.events.running = false; }
}

async function followLoop() {
  const dec = new TextDecoder();
  for (;;) {
    const ctrl = new AbortController();
    app.events.ctrl = ctrl;
    try {
      // on every (re)connect: fresh state first, then resume after the last event seen
      const s = await refreshState();
      const ghost = await api("GET", "/v1/ghost").catch(() => null);
      app.banner.load(ghost);
      const since = app.lastSeq == null ? Math.max(0, s.seq - LOG_BACKLOG) : Math.min(app.lastSeq, s.seq);
      const resp = await fetch(`/v1/events?since=${since}`, { credentials: "same-origin", signal: ctrl.signal, cache: "no-store" });
      if (resp.status === 401) { showLogin("Wrong or expired session: enter the token again."); return; }
      if (!resp.ok || !resp.body) throw new Error(`GET /v1/events answered ${resp.status}`);
      app.events.up = true;
      app.events.attempt = 0;
      connectionChanged();
      if (!app.multiview.up) app.multiview.reconnectNow();
      const reader = resp.body.getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (!line) continue;
          try { onEvent(JSON.parse(line)); } catch (err) { console.warn("bad event line", err); }
        }
      }
      throw new Error("the event stream ended");
    } catch (err) {
      if (!app.loggedIn) return;
      app.events.up = false;
      const wait = backoffMs(app.events.attempt++);
      app.events.retryAt = Date.now() + wait;
      app.events.error = String(err && err.message || err);
      connectionChanged();
      await new Promise((ok) => setTimeout(ok, wait));
    }
  }
}

async function poll() {
  for (;;) {
    await new Promise((ok) => setTimeout(ok, POLL_MS));
    if (!app.loggedIn || !app.events.up) continue;
    try {
      await refreshState();
    } catch (err) {
      if (err.status === 0 && app.events.ctrl) app.events.ctrl.abort();  // the server is away: reconnect
    }
  }
}

// ------------------------------------------------------------------ connection indicator
function setConnection(state, text) {
  const node = $("#connection");
  if (node.dataset.state !== state) node.dataset.state = state;
  const t = $("#connection-text");
  if (t.textContent !== text) t.textContent = text;
}

function connectionChanged() {
  if (!app.loggedIn) return;
  const ev = app.events, mv = app.multiview;
  if (ev.up && mv.up) setConnection("live", "live");
  else if (!ev.up) {
    const s = Math.max(0, (ev.retryAt - Date.now()) / 1000);
    setConnection("reconnecting", `reconnecting${s > 0.05 ? ` in ${s.toFixed(1)} s` : "…"} (attempt ${ev.attempt})`);
  } else setConnection("reconnecting", "previews reconnecting…");
}
app.connectionChanged = connectionChanged;
setInterval(connectionChanged, 250);

// ------------------------------------------------------------------ actions
app.toast = (text, kind = "error") => {
  const t = $("#toast");
  t.textContent = text;
  t.dataset.kind = kind;
  t.hidden = false;
  clearTimeout(app.toastTimer);
  app.toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
  if (kind === "error") app.log.note(text);
};

app.result = (camera, ok, text) => {
  app.results.set(camera, { ok, text, at: Date.now() });
  app.render();
};

app.cut = async (camera) => {
  if (!camera) return;
  try {
    const st = await api("POST", "/v1/director/cut", { to: camera, by: "operator" });
    app.program = st.program; app.hold = st.hold; app.mode = st.mode;
    if ((app.results.get(camera) || {}).ok === false) app.results.delete(camera);
    app.render();
  } catch (err) {
    const why = err.status === 409 ? `${camera} is not connected: the server refuses to cut to a lost camera`
      : err.status === 423 ? `${err.message} (H releases)` : err.message;
    app.toast(`Cut to ${camera} refused: ${why}`);
    app.result(camera, false, `cut refused: ${err.message}`);
  }
};

app.toggleHold = async () => {
  try {
    const st = app.hold ? await api("POST", "/v1/director/release", { by: "operator" })
      : await api("POST", "/v1/director/hold", { by: "operator" });
    app.hold = st.hold; app.program = st.program;
    app.render();
  } catch (err) { app.toast(`Hold refused: ${err.message}`); }
};

app.setMode = async (mode) => {
  try {
    const st = await api("POST", "/v1/director/mode", { mode, by: "operator" });
    app.mode = st.mode;
    app.render();
  } catch (err) { app.toast(`Mode not changed: ${err.message}`); }
};

app.command = async (camera, command, args) => {
  app.result(camera, true, `${command}…`);
  try {
    const ack = await api("POST", `/v1/cameras/${encodeURIComponent(camera)}/${command}`, args, { timeoutMs: 15000 });
    const extra = command === "zoom" ? ` ${ack.zoom}×` : command === "flip" ? ` → ${ack.facing}` : command === "still" && ack.bytes ? ` ${Math.round(ack.bytes / 1024)} KB` : "";
    app.result(camera, true, `${command} ok${extra} (${Math.round(ack.latency_ms)} ms)`);
  } catch (err) {
    app.result(camera, false, `${command} failed: ${err.message}`);
  }
};

function nthCamera(n) {
  const order = [...app.cameras.keys()].sort(idOrder);
  return order[n - 1];
}

document.addEventListener("keydown", (ev) => {
  if (!app.loggedIn || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const tag = (ev.target && ev.target.tagName) || "";
  if (["INPUT", "TEXTAREA", "SELECT"].includes(tag)) return;
  if (document.querySelector("dialog[open]")) return;
  const k = ev.key;
  let handled = true;
  if (/^[1-9]$/.test(k)) {
    const cam = nthCamera(parseInt(k, 10));
    if (cam) app.cut(cam); else app.toast(`No camera ${k}`);
  } else if (k === "h" || k === "H") app.toggleHold();
  else if (k === "Enter" || k === "a" || k === "A") app.banner.accept();
  else if (k === "Escape" || k === "v" || k === "V") app.banner.veto();
  else if ((k === "p" || k === "P") && !$("#pair").hidden) $("#pair").click();
  else handled = false;
  if (handled) {
    ev.preventDefault();
    app.keyLog.push({ key: k, t: Date.now() });
    if (app.keyLog.length > 1000) app.keyLog.splice(0, 500);
  }
});

$("#hold").addEventListener("click", () => app.toggleHold());
for (const b of document.querySelectorAll('[data-action="mode"]')) b.addEventListener("click", () => app.setMode(b.dataset.mode));

// ------------------------------------------------------------------ pairing (issue 12's API, when present)
async function setupPairing() {
  const btn = $("#pair");
  try {
    const resp = await fetch("/v1/pairings", { credentials: "same-origin" });
    if (!resp.ok) return;  // no pairing API on this server: no button
  } catch { return; }
  btn.hidden = false;
  btn.addEventListener("click", async () => {
    try {
      const p = await api("POST", "/v1/pairings", { name: "phone" });
      const id = p.id || p.pairing;
      $("#pair-qr").src = `/v1/pairings/${encodeURIComponent(id)}/qr.svg`;
      $("#pair-url").textContent = p.url || "";
      $("#pair-dialog").showModal();
    } catch (err) { app.toast(`Pairing failed: ${err.message}`); }
  });
}

// ------------------------------------------------------------------ rendering
app.render = () => {
  if (app.renderQueued) return;
  app.renderQueued = true;
  requestAnimationFrame(renderNow);
};

function renderNow() {
  app.renderQueued = false;
  const prog = $("#program");
  const progName = app.program ? (app.cameras.get(app.program) || {}).name : "";
  prog.textContent = app.program ? `${app.program}${progName && progName !== app.program ? " · " + progName : ""}` : "—";
  prog.dataset.program = app.program || "";
  const hold = $("#hold");
  hold.dataset.hold = app.hold || "";
  $("#hold-state").textContent = app.hold ? `on ${app.hold}` : "off";
  $("#mode").dataset.mode = app.mode || "";
  for (const b of document.querySelectorAll('[data-action="mode"]')) b.setAttribute("aria-checked", String(b.dataset.mode === app.mode));
  app.multiview.render();
  app.banner.render();
  app.coverage.render();
  app.session.render();
}
setInterval(() => app.render(), 1000);  // last-seen ages

// ------------------------------------------------------------------ start
app.multiview = new Multiview(app, $("#multiview"));
app.banner = new GhostBanner(app, $("#ghost-banner"));
app.coverage = new CoverageMap(app, $("#coverage"));
app.log = new EventLog($("#event-log"));
app.session = new SessionPanel(app, $("#session"));

async function boot() {
  const params = new URLSearchParams(location.search);
  if (params.get("login") === "wrong") {
    history.replaceState(null, "", location.pathname);
    showLogin("Wrong token in the link. Enter the token mmx serve printed when it started.");
    return;
  }
  try {
    await refreshState();
  } catch (err) {
    if (err.status === 401) { showLogin(""); return; }
    // the server is away at load: follow the stream, which retries with backoff
  }
  app.loggedIn = true;
  $("#login").hidden = true;
  if (app.started) {
    if (!app.events.running) followEvents();
    app.multiview.reconnectNow();
    return;
  }
  app.started = true;
  app.multiview.connect();
  followEvents();
  poll();
  setupPairing();
}

boot();
