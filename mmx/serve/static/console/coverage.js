// Coverage map: a top-down SVG of the set. The subject sits at the centre facing down
// (azimuth 0 = head-on, positive clockwise seen from above, DESIGN.md); each placed camera
// sits at its azimuth and distance with a field-of-view wedge from GET /v1/coverage (the
// server's FOV model: 0.5x ≈ 120°, 1x ≈ 70°, 2x ≈ 40°). Covered arcs ring the subject in
// green, uncovered ones dashed red (the largest bold), duplicates outlined amber. Drag a
// camera (or an unplaced one from below the map) to move it: PUT /v1/cameras/{c}/placement.

import { api } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const RING = 1.08;          // radius of the coverage ring (viewBox units)
const R_MIN = 0.3, R_MAX = 0.92;
const DEFAULT_DISTANCE_M = 3;

function svg(tag, attrs = {}) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  return n;
}

const rad = (deg) => (deg * Math.PI) / 180;
/** Screen position of azimuth ``az`` at radius ``r``: az 0 at the bottom, clockwise from above. */
export function pos(az, r) { return [-Math.sin(rad(az)) * r, Math.cos(rad(az)) * r]; }
export function azimuthOf(x, y) { return ((Math.atan2(-x, y) * 180) / Math.PI + 540) % 360 - 180; }

function arcPath(startDeg, widthDeg, r) {
  if (widthDeg >= 359.999) return `M ${-r} 0 A ${r} ${r} 0 1 0 ${r} 0 A ${r} ${r} 0 1 0 ${-r} 0`;
  const [x1, y1] = pos(startDeg, r);
  const [x2, y2] = pos(startDeg + widthDeg, r);
  // increasing azimuth is clockwise from above, which is clockwise on screen (y down): sweep 1
  return `M ${x1.toFixed(4)} ${y1.toFixed(4)} A ${r} ${r} 0 ${widthDeg > 180 ? 1 : 0} 1 ${x2.toFixed(4)} ${y2.toFixed(4)}`;
}

export class CoverageMap {
  constructor(app, root) {
    this.app = app;
    this.root = root;
    this.svg = root.querySelector("svg");
    this.parked = root.querySelector("#coverage-parked");
    this.summary = root.querySelector("#coverage-summary");
    this.data = null;
    this.timer = null;
    this.drag = null;
    this.marks = new Map();  // camera -> <g data-camera>
    this.layer = svg("g", { "data-role": "map" });
    this.svg.append(this.layer);
    this.svg.addEventListener("pointermove", (ev) => this.onMove(ev));
    this.svg.addEventListener("pointerup", (ev) => this.onUp(ev));
    this.svg.addEventListener("pointercancel", () => { this.drag = null; this.render(); });
    this.parked.addEventListener("pointerdown", (ev) => {
      const chip = ev.target.closest("[data-parked]");
      if (chip) { ev.preventDefault(); this.drag = { camera: chip.dataset.parked, parked: true, moved: false }; }
    });
    window.addEventListener("pointerup", (ev) => { if (this.drag && this.drag.parked) this.onUp(ev); });
    window.addEventListener("pointermove", (ev) => { if (this.drag && this.drag.parked) this.onMove(ev); });
  }

  invalidate() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 150);
  }

  async load() {
    try {
      this.data = await api("GET", "/v1/coverage?all=1");
      this.render();
    } catch { /* the connection indicator says why */ }
  }

  scaleM() {
    let max = DEFAULT_DISTANCE_M;
    for (const cam of this.app.cameras.values()) {
      const d = (cam.placement || {}).distance_m;
      if (typeof d === "number" && d > max) max = d;
    }
    return max * 1.15;
  }

  radiusOf(cam) {
    const d = (cam.placement || {}).distance_m;
    const m = typeof d === "number" && d > 0 ? d : DEFAULT_DISTANCE_M;
    return Math.max(R_MIN, Math.min(R_MAX, (m / this.scaleM()) * R_MAX));
  }

  mark(camera) {
    let m = this.marks.get(camera);
    if (m) return m;
    m = svg("g", { "data-camera": camera });
    const label = svg("text");
    label.textContent = camera.replace(/^cam-/, "");
    m.append(svg("title"), svg("circle", { r: 0.085 }), label, svg("text", { class: "caption", y: 0.145 }));
    m.addEventListener("pointerdown", (ev) => this.onDown(ev, camera));
    this.marks.set(camera, m);
    return m;
  }

  toSvg(ev) {
    const pt = this.svg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    const m = this.svg.getScreenCTM();
    if (!m) return [0, 0];
    const p = pt.matrixTransform(m.inverse());
    return [p.x, p.y];
  }

  onDown(ev, camera) {
    ev.preventDefault();
    this.svg.setPointerCapture?.(ev.pointerId);
    this.drag = { camera, parked: false, moved: false };
  }

  onMove(ev) {
    if (!this.drag) return;
    const [x, y] = this.toSvg(ev);
    const r = Math.hypot(x, y);
    this.drag.moved = true;
    this.drag.az = azimuthOf(x, y);
    this.drag.r = Math.max(R_MIN, Math.min(R_MAX, r));
    this.render();
  }

  async onUp(ev) {
    const drag = this.drag;
    this.drag = null;
    if (!drag || !drag.moved || drag.az == null) { this.render(); return; }
    if (drag.parked) {
      const [x, y] = this.toSvg(ev);
      if (Math.abs(x) > 1.25 || Math.abs(y) > 1.25) { this.render(); return; }
    }
    const cam = this.app.cameras.get(drag.camera);
    if (!cam) return;
    const placement = { ...(cam.placement || {}) };
    placement.azimuth_deg = Math.round(drag.az * 10) / 10;
    placement.distance_m = Math.round(((drag.r / R_MAX) * this.scaleM()) * 100) / 100;
    cam.placement = placement;  // shown at once; the server's camera.changed confirms
    this.render();
    try {
      await api("PUT", `/v1/cameras/${encodeURIComponent(drag.camera)}/placement`, placement);
      this.app.result(drag.camera, true, `placed at ${placement.azimuth_deg}°, ${placement.distance_m} m`);
    } catch (err) {
      this.app.toast(`Placement of ${drag.camera} refused: ${err.message}`);
    }
    this.app.refreshSoon();
  }

  render() {
    const app = this.app;
    const data = this.data || {};
    const arcs = new Map((data.arcs || []).map((a) => [a.camera, a]));
    const dup = new Set((data.duplicates || []).flatMap((d) => d.cameras));
    const proposed = app.banner.proposedCamera();
    const g = [];
    for (const r of [0.33, 0.66, 1.0]) g.push(svg("circle", { class: "ring", cx: 0, cy: 0, r: r * R_MAX }));
    for (const a of data.covered_arcs || []) g.push(svg("path", { class: "arc-covered", d: arcPath(a.start_deg, a.width_deg, RING) }));
    const largest = data.largest_uncovered;
    for (const a of data.uncovered_arcs || []) {
      const isLargest = largest && a.start_deg === largest.start_deg && a.width_deg === largest.width_deg;
      g.push(svg("path", { class: "arc-gap" + (isLargest ? " largest" : ""), d: arcPath(a.start_deg, a.width_deg, RING), "data-gap": isLargest ? "largest" : "gap" }));
    }
    // the subject, facing azimuth 0 (down)
    g.push(svg("circle", { class: "subject", cx: 0, cy: 0, r: 0.07 }));
    g.push(svg("path", { class: "subject", d: "M -0.04 0.06 L 0 0.13 L 0.04 0.06 Z" }));
    const marks = [];
    const parked = [];
    for (const [camera, cam] of app.cameras) {
      const pl = cam.placement || {};
      let az = typeof pl.azimuth_deg === "number" ? pl.azimuth_deg : null;
      let r = this.radiusOf(cam);
      if (this.drag && this.drag.camera === camera && this.drag.az != null) { az = this.drag.az; r = this.drag.r; }
      if (az == null) { parked.push(camera); continue; }
      const fov = (arcs.get(camera) || {}).fov_deg || 70;
      const [x, y] = pos(az, r);
      // the wedge: from the camera towards the subject, half-angle fov/2, reaching just past it
      const len = r + 0.06;
      const back = az + 180;  // direction from the camera to the subject
      const [ax, ay] = [x + -Math.sin(rad(back - fov / 2)) * len, y + Math.cos(rad(back - fov / 2)) * len];
      const [bx, by] = [x + -Math.sin(rad(back + fov / 2)) * len, y + Math.cos(rad(back + fov / 2)) * len];
      const cls = app.program === camera ? " program" : proposed === camera ? " proposed" : "";
      g.push(svg("path", { class: "wedge" + cls, d: `M ${x} ${y} L ${ax} ${ay} A ${len} ${len} 0 0 ${fov > 180 ? 1 : 0} ${bx} ${by} Z`, "data-wedge": camera }));
      // marks are kept across renders (a drag or a test holds on to them), only updated
      const mark = this.mark(camera);
      mark.setAttribute("class", "mark" + cls + (dup.has(camera) ? " duplicate" : "") + (cam.status === "live" ? "" : " lost"));
      mark.setAttribute("transform", `translate(${x.toFixed(4)} ${y.toFixed(4)})`);
      mark.querySelector("title").textContent = `${camera}${cam.name ? " · " + cam.name : ""}: ${Math.round(az)}°, FOV ${Math.round(fov)}°${dup.has(camera) ? " (duplicate angle)" : ""}`;
      mark.querySelector(".caption").textContent = pl.label || "";
      marks.push(mark);
    }
    for (const [camera, m] of this.marks) if (!marks.includes(m)) { m.remove(); this.marks.delete(camera); }
    this.layer.replaceChildren(...g);
    for (const m of marks) if (m.parentNode !== this.svg) this.svg.append(m);
    // unplaced cameras: chips to drag onto the map (not [data-camera]: only placed cameras are marks)
    const chips = parked.sort().map((camera) => {
      const s = document.createElement("span");
      s.dataset.parked = camera;
      s.textContent = `${camera} unplaced`;
      s.title = "Drag onto the map to place it";
      return s;
    });
    this.parked.replaceChildren(...chips);
    const parts = [];
    if (typeof data.covered_deg === "number") parts.push(`${Math.round(data.covered_deg)}° covered`);
    if (largest) parts.push(`gap ${Math.round(largest.width_deg)}°`);
    if ((data.duplicates || []).length) parts.push(`dup ${data.duplicates.map((d) => d.cameras.join("/")).join(", ")}`);
    this.summary.textContent = parts.join(" · ");
  }
}
