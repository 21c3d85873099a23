// Ghost banner: the pending proposal of `mmx ghost` (from → to, score, the top reasons in
// words, a countdown to its cut_at on the beat) with Accept (Enter / A) and Veto (Esc / V),
// answered through POST /v1/ghost/{proposal}/accept|veto. Decided, expired and executed
// proposals leave the banner with a visible outcome for OUTCOME_MS.

import { api } from "./api.js";

const OUTCOME_MS = 5000;
const HELD_SHOWN_S = 30;

function words(reason) {
  // "cam-3 sees 17 of 19 joints (presence 0.89 × weight 1 = +0.89)" → the sentence, numbers apart
  const text = String(reason.text || reason.feature || "");
  const i = text.indexOf(" (");
  return i > 0 ? text.slice(0, i) : text;
}

/** The few reasons worth reading: the gain (why now), then the strongest contributions. */
export function topReasons(reasons, n = 3) {
  const list = Array.isArray(reasons) ? reasons.filter((r) => r && typeof r === "object") : [];
  const gain = list.filter((r) => r.feature === "gain" || r.feature === "forced");
  const contrib = list.filter((r) => typeof r.contribution === "number" && r.contribution > 0)
    .sort((a, b) => b.contribution - a.contribution);
  const rest = list.filter((r) => !gain.includes(r) && !contrib.includes(r) && !["timing", "energy"].includes(r.feature) && typeof r.contribution !== "number");
  return [...gain, ...contrib, ...rest].slice(0, n).map(words).filter(Boolean);
}

export class GhostBanner {
  constructor(app, root) {
    this.app = app;
    this.root = root;
    this.current = null;   // {proposal, from, to, score, reasons, cut_at, expires_at, status}
    this.outcome = null;   // {kind, text, until}
    this.held = null;
    this.busy = false;
    root.querySelector('[data-action="accept"]').addEventListener("click", () => this.accept());
    root.querySelector('[data-action="veto"]').addEventListener("click", () => this.veto());
    setInterval(() => this.tick(), 100);
  }

  proposedCamera() {
    return this.current && ["pending", "accepted"].includes(this.current.status) ? this.current.to : null;
  }

  load(ghost) {
    if (!ghost) return;
    const p = ghost.pending;
    if (p && (!this.current || this.current.proposal !== p.proposal)) this.current = { ...p };
    else if (p && this.current) this.current.status = p.status;
    else if (!p && this.current && !this.outcome) this.current = null;
    if (ghost.held) this.held = ghost.held;
    this.render();
  }

  onEvent(ev) {
    const d = ev.data || {};
    const cur = this.current;
    switch (ev.type) {
      case "ghost.proposed":
        this.current = { ...d, status: "pending" };
        this.outcome = null;
        break;
      case "ghost.accepted":
        if (cur && cur.proposal === d.proposal) {
          cur.status = "accepted"; cur.by = d.by || ev.src;
          if (this.app.mode === "manual") this.finish("accepted", `Accepted by ${cur.by}: manual mode records it, no cut`);
        }
        break;
      case "ghost.vetoed":
        if (cur && cur.proposal === d.proposal) this.finish("vetoed", `Vetoed by ${d.by || ev.src}: ${cur.from || "—"} stays, ${cur.to} not cut`);
        break;
      case "ghost.expired":
        if (cur && cur.proposal === d.proposal) this.finish("expired", `Expired: ${cur.from || "—"} → ${cur.to}${d.reason ? ` (${d.reason})` : ""}`);
        break;
      case "director.cut":
        if (cur && d.proposal && d.proposal === cur.proposal) {
          const late = typeof cur.cut_at === "number" ? ` ${((ev.ts - cur.cut_at) * 1000).toFixed(0)} ms from its beat` : "";
          this.finish("executed", `Executed: cut ${d.from || "—"} → ${d.to} by ${d.by}${late}`);
        }
        break;
      case "ghost.held":
        this.held = { ...d, ts: ev.ts };
        break;
      default:
        return;
    }
    this.render();
  }

  finish(kind, text) {
    this.current = null;
    this.outcome = { kind, text, until: Date.now() + OUTCOME_MS };
    this.app.log.note(`ghost: ${text}`);
  }

  async answer(kind) {
    const cur = this.current;
    if (!cur || cur.status !== "pending" || this.busy) return;
    this.busy = true;
    this.render();
    try {
      await api("POST", `/v1/ghost/${encodeURIComponent(cur.proposal)}/${kind}`, { by: "operator" });
    } catch (err) {
      this.app.toast(`${kind === "accept" ? "Accept" : "Veto"} refused: ${err.message}`);
      if (err.status === 409 && err.body && err.body.proposal) {
        const st = err.body.proposal.status;
        if (st !== "pending" && this.current === cur) this.finish(st, `${st[0].toUpperCase()}${st.slice(1)} before your answer`);
      }
    } finally {
      this.busy = false;
      this.render();
    }
  }

  accept() { return this.answer("accept"); }
  veto() { return this.answer("veto"); }

  tick() {
    const cur = this.current;
    const now = this.app.serverNow();
    if (cur && typeof cur.expires_at === "number" && now > cur.expires_at + 1.0) {
      this.finish("expired", `Expired unanswered: ${cur.from || "—"} → ${cur.to}`);
      this.render();
      this.app.render();
      return;
    }
    if (this.outcome && Date.now() > this.outcome.until) { this.outcome = null; this.render(); return; }
    this.renderTimer(now);
  }

  renderTimer(now) {
    const timer = this.root.querySelector("#ghost-timer");
    const cur = this.current;
    let text = "";
    if (cur && typeof cur.cut_at === "number") {
      const dt = cur.cut_at - now;
      text = dt > 0 ? `${dt.toFixed(1)} s` : cur.status === "accepted" ? "cutting" : `+${Math.min(99, -dt).toFixed(1)} s`;
    }
    if (timer.textContent !== text) timer.textContent = text;
  }

  render() {
    const root = this.root;
    const cur = this.current;
    const head = root.querySelector("#ghost-headline");
    const reasons = root.querySelector("#ghost-reasons");
    root.dataset.proposal = cur ? cur.proposal : "";
    root.dataset.state = cur ? cur.status : "idle";
    root.dataset.outcome = this.outcome ? this.outcome.kind : "";
    const pending = !!cur && cur.status === "pending";
    root.querySelector('[data-action="accept"]').disabled = !pending || this.busy;
    root.querySelector('[data-action="veto"]').disabled = !pending || this.busy;
    let items = [];
    if (cur) {
      const score = typeof cur.score === "number" ? `  score ${cur.score.toFixed(2)}` : "";
      const timing = (cur.reasons || []).find((r) => r && r.feature === "timing");
      const beat = timing && timing.clock === "beat" ? " on the beat" : "";
      head.textContent = cur.status === "accepted"
        ? `Accepted: ${cur.from || "—"} → ${cur.to}, cutting at its cut_at${beat}`
        : `${cur.from || "—"} → ${cur.to}${score}${beat}${this.app.mode === "manual" ? "  (manual mode: an accept only records)" : ""}`;
      items = topReasons(cur.reasons);
    } else if (this.outcome) {
      head.textContent = this.outcome.text;
    } else if (this.held && this.app.serverNow() - (this.held.ts || 0) < HELD_SHOWN_S) {
      head.textContent = `No proposal — ghost holds ${this.held.camera || "the shot"}`;
      items = topReasons(this.held.reasons, 2);
    } else {
      head.textContent = this.app.mode === "manual" ? "No proposal (manual mode: proposals need mmx ghost running)" : "No proposal";
    }
    reasons.replaceChildren(...items.map((t) => { const li = document.createElement("li"); li.textContent = t; return li; }));
    this.renderTimer(this.app.serverNow());
  }
}
