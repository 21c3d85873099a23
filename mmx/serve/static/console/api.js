// The console is a client of the public mmx serve API (DESIGN.md), authenticated by the
// HttpOnly session cookie the login set. No private endpoints.

export class ApiError extends Error {
  constructor(status, message, body) { super(message); this.status = status; this.body = body; }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/** JSON request to the server; resolves the decoded answer, rejects ApiError (status 0: unreachable). */
export async function api(method, path, body, { timeoutMs = 8000 } = {}) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  let resp;
  try {
    resp = await fetch(path, {
      method, credentials: "same-origin", signal: ctrl.signal, cache: "no-store",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, `server unreachable (${err.name === "AbortError" ? "timeout" : err.message})`);
  } finally {
    clearTimeout(timer);
  }
  const text = await resp.text().catch(() => "");
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text }; }
  if (resp.status === 401) onUnauthorized();
  if (!resp.ok) throw new ApiError(resp.status, (data && data.error) || `${resp.status} ${resp.statusText}`, data);
  return data;
}

/** Exponential backoff with jitter: 0.25 s doubling to 5 s. */
export function backoffMs(attempt) {
  const base = Math.min(5000, 250 * 2 ** Math.min(attempt, 5));
  return base * (0.8 + Math.random() * 0.4);
}

/** Sort key of camera ids as the server's: cam-2 before cam-10, other names after. */
export function idOrder(a, b) {
  const n = (s) => { const m = /-(\d+)$/.exec(s); return m ? parseInt(m[1], 10) : 1 << 30; };
  return n(a) - n(b) || (a < b ? -1 : a > b ? 1 : 0);
}
