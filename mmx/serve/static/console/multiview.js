// Multiview: one tile per camera (camera-id order) with its live preview, all previews over
// ONE WebSocket (GET /v1/previews/ws), so 16 tiles do not need 16 MJPEG connections
// (browsers allow ~6 HTTP/1.1 connections per host). Each binary message is
// uint32 BE header length | JSON {camera, seq, ts} | JPEG. Frames are decoded off the main
// thread with createImageBitmap and drawn on a canvas; while one frame of a tile decodes,
// only the newest next one is kept (latest frame wins, no queue of stale frames).

import { backoffMs, idOrder } from "./api.js";

const AGES_KEPT = 600;
const RESULT_SHOWN_MS = 12000;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-") || k === "title" || k === "aria-label") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

function fmtZoom(z) { return z == null ? "–" : `${Number.isInteger(z) ? z : +z.toFixed(2)}×`; }

export function ageText(seconds) {
  if (seconds == null || !isFinite(seconds)) return "never seen";
  if (seconds < 1.5) return "seen now";
  if (seconds < 90) return `seen ${seconds.toFixed(0)} s ago`;
  if (seconds < 5400) return `seen ${(seconds / 60).toFixed(0)} min ago`;
  return `seen ${(seconds / 3600).toFixed(1)} h ago`;
}

export class Multiview {
  constructor(app, root) {
    this.app = app;
    this.root = root;
    this.tiles = new Map();      // camera -> tile record
    this.stats = new Map();      // camera -> {frames, seq, ts, ages[]}; also for cameras without a tile yet
    this.ws = null;
    this.attempt = 0;
    this.up = false;
    this.messages = 0;
    this.decoder = new TextDecoder();
    root.addEventListener("click", (ev) => this.onClick(ev));
  }

  // ---------------------------------------------------------------- the preview socket
  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/v1/previews/ws`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0; this.up = true; this.app.connectionChanged();
      ws.send(JSON.stringify({ t: "subscribe", cameras: null }));
    };
    ws.onmessage = (ev) => { if (typeof ev.data !== "string") this.onFrame(ev.data); };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.up = false; this.app.connectionChanged();
      const wait = backoffMs(this.attempt++);
      this.retryAt = Date.now() + wait;
      setTimeout(() => this.connect(), wait);
    };
    ws.onerror = () => {};
  }

  reconnectNow() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return;
    const old = this.ws;
    this.ws = null;
    if (old) { old.onclose = null; try { old.close(); } catch { /* already closed */ } }
    this.connect();
  }

  onFrame(buf) {
    this.messages++;
    const n = new DataView(buf).getUint32(0);
    let header;
    try { header = JSON.parse(this.decoder.decode(new Uint8Array(buf, 4, n))); } catch { return; }
    const blob = new Blob([new Uint8Array(buf, 4 + n)], { type: "image/jpeg" });
    const st = this.stat(header.camera);
    st.received++;
    if (!this.app.cameras.has(header.camera)) this.app.refreshSoon();
    if (st.decoding) { st.pending = { header, blob }; st.skipped++; return; }
    this.decode(header.camera, st, header, blob);
  }

  stat(camera) {
    let st = this.stats.get(camera);
    if (!st) {
      st = { frames: 0, received: 0, skipped: 0, seq: 0, ts: null, ages: [], decoding: false, pending: null, url: null };
      this.stats.set(camera, st);
    }
    return st;
  }

  async decode(camera, st, header, blob) {
    st.decoding = true;
    try {
      const tile = this.tiles.get(camera);
      if (tile) {
        if (window.createImageBitmap) {
          const bmp = await createImageBitmap(blob);
          const t = this.tiles.get(camera) || tile;
          if (t.canvas.width !== bmp.width || t.canvas.height !== bmp.height) {
            t.canvas.width = bmp.width; t.canvas.height = bmp.height;
          }
          t.ctx.drawImage(bmp, 0, 0);
          bmp.close();
        } else {
          // no createImageBitmap: an <img> from a blob URL, the previous URL revoked
          const url = URL.createObjectURL(blob);
          const img = new Image();
          await new Promise((ok) => { img.onload = ok; img.onerror = ok; img.src = url; });
          tile.canvas.width = img.naturalWidth || tile.canvas.width;
          tile.canvas.height = img.naturalHeight || tile.canvas.height;
          tile.ctx.drawImage(img, 0, 0);
          if (st.url) URL.revokeObjectURL(st.url);
          st.url = url;
        }
        if (!tile.hasPicture) { tile.hasPicture = true; tile.nosignal.hidden = true; }
        tile.el.dataset.frames = String(st.frames + 1);
      }
      st.frames++;
      st.seq = header.seq;
      st.ts = header.ts;
      // frame age: shown now minus the server's receive time (local clock; the bench runs on one machine)
      st.ages.push(Date.now() - header.ts * 1000);
      if (st.ages.length > AGES_KEPT) st.ages.splice(0, st.ages.length - AGES_KEPT);
    } catch { /* a broken JPEG: skip it */ }
    st.decoding = false;
    if (st.pending) {
      const next = st.pending; st.pending = null;
      this.decode(camera, st, next.header, next.blob);
    }
  }

  // ---------------------------------------------------------------- tiles
  order() { return [...this.app.cameras.keys()].sort(idOrder); }

  makeTile(camera) {
    const canvas = el("canvas", { width: 640, height: 360 });
    const nosignal = el("div", { class: "nosignal" }, "no picture yet");
    const f = (name) => el("span", { "data-field": name });
    const view = el("div", { class: "view", "data-role": "view", title: "Click to cut to this camera" }, canvas, nosignal,
      el("div", { class: "overlay" },
        el("span", { class: "key", "data-field": "key" }),
        el("span", { class: "camname", "data-field": "name" }),
        el("span", { class: "spacer" }),
        el("span", { class: "badge tally-program" }, "PGM"),
        el("span", { class: "badge tally-ghost" }, "GHOST"),
        el("span", { class: "badge status", "data-field": "status" })));
    const lenses = el("span", { "data-field": "lenses", class: "lenses" });
    const node = el("article", { class: "tile", "data-camera": camera, "data-status": "lost", "data-program": "false", "data-proposed": "false", "data-frames": "0" },
      view,
      el("div", { class: "meta" }, f("placement"), f("facing"), f("zoom"), f("battery"), f("thermal"), f("seen")),
      el("div", { class: "controls" },
        el("button", { "data-action": "cut", title: "Cut to this camera" }, "Cut"),
        el("button", { "data-action": "flip", title: "Switch front/back camera" }, "Flip"),
        lenses,
        el("button", { "data-action": "still", title: "Take a full-resolution still" }, "Still")),
      el("div", { class: "result", "data-field": "result" }));
    const fields = {};
    for (const n of node.querySelectorAll("[data-field]")) fields[n.dataset.field] = n;
    const tile = { el: node, canvas, ctx: canvas.getContext("2d"), nosignal, fields, hasPicture: false, lensKey: "" };
    this.tiles.set(camera, tile);
    return tile;
  }

  render() {
    const app = this.app;
    const order = this.order();
    for (const [camera, tile] of this.tiles) {
      if (!app.cameras.has(camera)) { tile.el.remove(); this.tiles.delete(camera); }
    }
    const n = order.length;
    this.root.dataset.count = String(n);
    this.root.style.setProperty("--cols", String(n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : 4));
    this.root.dataset.dense = n > 9 ? "true" : "false";
    document.getElementById("multiview-empty").hidden = n > 0;
    const proposed = app.banner.proposedCamera();
    let prev = null;
    order.forEach((camera, i) => {
      const cam = app.cameras.get(camera);
      const tile = this.tiles.get(camera) || this.makeTile(camera);
      const node = tile.el;
      if (prev ? prev.nextSibling !== node : this.root.querySelector(".tile") !== node) {
        if (prev) prev.after(node); else this.root.prepend(node);
      }
      prev = node;
      const set = (k, v) => { if (node.dataset[k] !== v) node.dataset[k] = v; };
      set("status", cam.status === "live" ? "live" : "lost");
      set("program", String(app.program === camera));
      set("proposed", String(proposed === camera));
      set("index", String(i + 1));
      const F = tile.fields;
      const text = (k, v) => { if (F[k].textContent !== v) F[k].textContent = v; };
      text("key", i < 9 ? String(i + 1) : "·");
      text("name", cam.name && cam.name !== camera ? `${camera} · ${cam.name}` : camera);
      text("status", cam.status === "live" ? "LIVE" : "LOST");
      F.status.dataset.status = cam.status === "live" ? "live" : "lost";
      const pl = cam.placement || {};
      const where = [pl.label, pl.azimuth_deg != null ? `${Math.round(pl.azimuth_deg)}°` : null].filter(Boolean).join(" ");
      text("placement", where || "unplaced");
      text("facing", cam.facing || "–");
      text("zoom", fmtZoom(cam.zoom));
      const bat = cam.battery;
      text("battery", bat == null ? "battery –" : `battery ${Math.round((bat <= 1 ? bat * 100 : bat))}%`);
      F.battery.className = bat != null && (bat <= 1 ? bat : bat / 100) < 0.2 ? "bad" : "";
      text("thermal", cam.thermal ? `thermal ${cam.thermal}` : "");
      F.thermal.className = ["serious", "critical"].includes(cam.thermal) ? "bad" : cam.thermal === "fair" ? "warn" : "";
      const st = this.stats.get(camera);
      const seen = Math.max(cam.last_seen || 0, st && st.ts ? st.ts : 0);
      text("seen", ageText(seen ? app.serverNow() - seen : null));
      F.seen.className = cam.status !== "live" ? "bad" : "";
      this.renderLenses(tile, cam);
      let result = app.results.get(camera);
      if (result && Date.now() - result.at > RESULT_SHOWN_MS) { app.results.delete(camera); result = null; }
      text("result", result ? result.text : "");
      F.result.className = "result" + (result && !result.ok ? " bad" : "");
    });
  }

  renderLenses(tile, cam) {
    const lenses = ((cam.lenses || {})[cam.facing || ""] || []).slice().sort((a, b) => a - b);
    const key = `${lenses.join(",")}|${cam.zoom}`;
    if (tile.lensKey === key) return;
    tile.lensKey = key;
    tile.fields.lenses.replaceChildren(...lenses.map((z) => {
      const b = el("button", { "data-action": "zoom", "data-zoom": String(z), title: `Zoom to the ${fmtZoom(z)} lens` }, fmtZoom(z));
      b.setAttribute("aria-pressed", String(cam.zoom != null && Math.abs(cam.zoom - z) < 1e-6));
      return b;
    }));
  }

  onClick(ev) {
    const tileEl = ev.target.closest("[data-camera]");
    if (!tileEl) return;
    const camera = tileEl.dataset.camera;
    const action = ev.target.closest("[data-action]");
    if (action) {
      const a = action.dataset.action;
      if (a === "cut") this.app.cut(camera);
      else if (a === "flip") this.app.command(camera, "flip", {});
      else if (a === "zoom") this.app.command(camera, "zoom", { zoom: parseFloat(action.dataset.zoom) });
      else if (a === "still") this.app.command(camera, "still", {});
      return;
    }
    if (ev.target.closest("[data-role=view]")) this.app.cut(camera);
  }

  /** Per camera: frames shown, frame-age percentiles (ms) over the last AGES_KEPT frames. */
  frameStats() {
    const out = {};
    for (const [camera, st] of this.stats) {
      const ages = st.ages.slice().sort((a, b) => a - b);
      const q = (p) => ages.length ? ages[Math.min(ages.length - 1, Math.round(p * (ages.length - 1)))] : null;
      out[camera] = { frames: st.frames, received: st.received, skipped: st.skipped, p50_ms: q(0.5), p95_ms: q(0.95), max_ms: q(1) };
    }
    return out;
  }

  resetStats() { for (const st of this.stats.values()) { st.ages = []; st.frames = 0; st.received = 0; st.skipped = 0; } }
}
