// Session panel: start (title, notes) / stop, elapsed time, stills and cuts counts, the
// recording, and the music cue playing (POST /v1/session/start|stop).

import { api } from "./api.js";

function hms(s) {
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return `${h ? h + ":" : ""}${String(m).padStart(h ? 2 : 1, "0")}:${String(sec).padStart(2, "0")}`;
}

export class SessionPanel {
  constructor(app, root) {
    this.app = app;
    this.root = root;
    root.querySelector('[data-action="session-start"]').addEventListener("click", () => this.start());
    root.querySelector('[data-action="session-stop"]').addEventListener("click", () => this.stop());
    setInterval(() => this.render(), 1000);
  }

  async start() {
    const title = this.root.querySelector("#session-title").value.trim();
    const notes = this.root.querySelector("#session-notes").value.trim();
    try {
      await api("POST", "/v1/session/start", { title, notes });
      this.app.refreshSoon(0);
    } catch (err) { this.app.toast(`Session not started: ${err.message}`); }
  }

  async stop() {
    if (!confirm("Stop the production session?")) return;
    try {
      await api("POST", "/v1/session/stop", {});
      this.app.refreshSoon(0);
    } catch (err) { this.app.toast(`Session not stopped: ${err.message}`); }
  }

  render() {
    const s = this.app.state || {};
    const info = s.session_info;
    const active = !!(s.session && info);
    this.root.dataset.state = active ? "active" : "none";
    this.root.querySelector("#session-idle").hidden = active;
    this.root.querySelector("#session-active").hidden = !active;
    if (active) {
      this.root.querySelector("#session-name").textContent = info.title || "Untitled session";
      this.root.querySelector("#session-elapsed").textContent = hms(this.app.serverNow() - info.started_at);
      const c = s.session_counts || {};
      this.root.querySelector("#session-counts").textContent =
        `${c["still.captured"] || 0} stills · ${c["director.cut"] || 0} cuts`;
      const rec = s.recording || {};
      this.root.querySelector("#session-rec").textContent = rec.armed ? "● recording" + (rec.warning ? ` — ${rec.warning}` : "") : "";
    }
    const music = this.root.querySelector("#music");
    const cue = s.music;
    music.hidden = !cue;
    if (cue) {
      const into = typeof cue.started_at === "number" ? this.app.serverNow() - cue.started_at + (cue.offset_s || 0) : null;
      music.textContent = `♪ ${cue.title || cue.path || cue.track || "music"}${into != null ? ` — ${hms(into)}` : ""}`;
    }
  }
}
