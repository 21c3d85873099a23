// Stills waiting for the server: kept in IndexedDB until POST /v1/stills has them, so a
// still taken while the server is away (or the page reloads) is uploaded later, once.
// Uploads are idempotent by still id: the server stores a repeated still once.

const DB = "mmx-camera", STORE = "stills";

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: "still" });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function tx(db, mode, fn) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, mode);
    const result = fn(t.objectStore(STORE));
    t.oncomplete = () => resolve(result && "result" in result ? result.result : undefined);
    t.onerror = () => reject(t.error);
  });
}

export async function sha256Hex(blob) {
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox {
  constructor(token) {
    this.token = token;
    this.db = openDb();
    this.flushing = null;
    this.onChange = () => {};
  }

  /** Keep a still {still, camera, sha256, blob} until it is uploaded. */
  async add(item) {
    await tx(await this.db, "readwrite", (s) => s.put(item));
    this.onChange(await this.count());
  }

  async count() {
    return tx(await this.db, "readonly", (s) => s.count());
  }

  /** Upload one still; true once the server has it (201 new or 200 already stored). */
  async upload(item) {
    const form = new FormData();
    form.append("camera", item.camera);
    form.append("still", item.still);
    form.append("sha256", item.sha256);
    form.append("image", item.blob, `${item.still}.jpg`);
    const resp = await fetch("/v1/stills", { method: "POST", body: form, headers: { Authorization: `Bearer ${this.token}` } });
    if (resp.ok) return true;
    if (resp.status >= 400 && resp.status < 500 && resp.status !== 408 && resp.status !== 429) {
      // the server will never take this one (wrong camera, bad bytes): drop it, say so
      console.warn(`still ${item.still} refused: ${resp.status} ${await resp.text()}`);
      return true;
    }
    return false;
  }

  /** Upload every kept still, oldest first; stops at the first failure (server away). */
  flush() {
    if (this.flushing) return this.flushing;
    this.flushing = (async () => {
      try {
        const items = await tx(await this.db, "readonly", (s) => s.getAll());
        for (const item of items) {
          let done = false;
          try { done = await this.upload(item); } catch (err) { done = false; }
          if (!done) return false;
          await tx(await this.db, "readwrite", (s) => s.delete(item.still));
          this.onChange(await this.count());
        }
        return true;
      } finally {
        this.flushing = null;
      }
    })();
    return this.flushing;
  }
}
