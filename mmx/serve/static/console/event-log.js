// Event log: the last events of GET /v1/events, newest on top (cuts, holds, ghost
// decisions, stills, joins and losses, commands), plus the console's own notes.

const KEPT = 150;
const QUIET = new Set(["pose.sample", "ghost.online", "recording.disk"]);

function fmtTime(ts) {
  const d = new Date(ts * 1000);
  return d.toTimeString().slice(0, 8);
}

function placementText(p) {
  if (!p || typeof p !== "object") return "placement cleared";
  const parts = [p.label, typeof p.azimuth_deg === "number" ? `${Math.round(p.azimuth_deg)}°` : null,
    typeof p.distance_m === "number" ? `${p.distance_m} m` : null].filter(Boolean);
  return `placed ${parts.join(" ") || "(no geometry)"}`;
}

/** One line of human text for an event. */
export function describe(ev) {
  const d = ev.data || {};
  switch (ev.type) {
    case "director.cut": return `${d.from || "—"} → ${d.to || "—"} by ${d.by}${d.reason ? ` (${d.reason})` : ""}`;
    case "director.hold": return `hold on ${d.camera} (${d.by})`;
    case "director.release": return `released ${d.camera} (${d.by})`;
    case "director.mode": return `${d.previous} → ${d.mode}`;
    case "director.program_lost": return `${d.camera} lost on program; fallback ${d.fallback || "none"}`;
    case "camera.joined": return `${d.camera}${d.name ? " · " + d.name : ""} joined`;
    case "camera.left": return `${d.camera} left (${d.reason || "gone"})`;
    case "camera.changed": return `${d.camera}: ${Object.keys(d).filter((k) => k !== "camera").map((k) => k === "placement" ? placementText(d[k]) : `${k} ${typeof d[k] === "object" ? JSON.stringify(d[k]) : d[k]}`).join(", ")}`;
    case "camera.command": return `${d.camera} ${d.command} ${d.args && Object.keys(d.args).length ? JSON.stringify(d.args) : ""}`;
    case "camera.ack": return `${d.camera} ${d.command} ${d.ok ? "ok" : "failed: " + (d.error || "?")}${d.latency_ms != null ? ` ${Math.round(d.latency_ms)} ms` : ""}`;
    case "still.captured": return `${d.camera} still ${d.width}×${d.height}`;
    case "still.marker": return `${d.label || "marker"}${d.camera ? " on " + d.camera : ""}`;
    case "ghost.proposed": return `${d.from || "—"} → ${d.to} score ${typeof d.score === "number" ? d.score.toFixed(2) : "?"}`;
    case "ghost.accepted": case "ghost.vetoed": return `${d.proposal ? d.proposal.slice(-6) : ""} by ${d.by || ev.src}`;
    case "ghost.expired": return `${d.proposal ? d.proposal.slice(-6) : ""}${d.reason ? " (" + d.reason + ")" : ""}`;
    case "ghost.held": return `holds ${d.camera || ""}`;
    case "session.started": return d.title || "untitled";
    case "session.ended": return d.reason || "";
    case "music.cue": return `${d.title || d.path || "track"} at ${d.offset_s || 0} s`;
    case "recording.started": case "recording.stopped": return `${d.camera || "program"} ${d.path || ""}`;
    default: return "";
  }
}

export class EventLog {
  constructor(root) {
    this.root = root;
    this.count = 0;
  }

  add(ev) {
    if (QUIET.has(ev.type)) return;
    this.push(ev.type, describe(ev), ev.ts, ev.type.split(".")[0], ev.seq);
  }

  note(text) { this.push("console", text, Date.now() / 1000, "console", null); }

  push(type, text, ts, kind, seq) {
    const li = document.createElement("li");
    li.dataset.kind = kind;
    li.dataset.type = type;
    if (seq != null) li.dataset.seq = String(seq);
    const t = document.createElement("time");
    t.textContent = fmtTime(ts);
    const ty = document.createElement("span");
    ty.className = "type";
    ty.textContent = type;
    const tx = document.createElement("span");
    tx.className = "text";
    tx.textContent = text;
    tx.title = text;
    li.append(t, ty, tx);
    this.root.prepend(li);
    this.count++;
    while (this.root.childElementCount > KEPT) this.root.lastElementChild.remove();
  }
}
