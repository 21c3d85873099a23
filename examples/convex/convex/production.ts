// `production:ingestEvents`: the mutation `mmx ledger sync --convex URL` calls over Convex's
// HTTP API (POST {URL}/api/mutation, {"path": "production:ingestEvents", "args": {"events":
// [...]}, "format": "json"}, header `Authorization: Convex <deploy key>`).
//
// Idempotent by event id: an event whose id is already in `productionEvents` is skipped, so a
// batch retried after a lost answer changes nothing. The projections mirror the local ledger
// (DESIGN.md, "The ledger"); events are applied in the order given, which is ledger order.
import { v, type Infer } from "convex/values";
import { mutation, query, type MutationCtx } from "./_generated/server";
import type { Doc } from "./_generated/dataModel";

/** The mmx event envelope (DESIGN.md). `data` is per type and carried as is. */
export const mmxEvent = v.object({
  v: v.number(),
  id: v.string(),
  seq: v.union(v.number(), v.null()),
  ts: v.number(),
  type: v.string(),
  session: v.union(v.string(), v.null()),
  src: v.string(),
  data: v.any(),
});
export type MmxEvent = Infer<typeof mmxEvent>;

/** Most events one call may carry; the client (mmx ledger sync) sends at most this many. */
export const MAX_BATCH = 500;
const MAX_ID_LENGTH = 128;

/** Event types that land in productionDirectorEvents: creative decisions and marks. */
export const DIRECTOR_TYPES = new Set([
  "director.cut",
  "director.hold",
  "director.release",
  "director.mode",
  "still.marker",
  "ghost.proposed",
  "ghost.accepted",
  "ghost.vetoed",
  "ghost.expired",
]);

type Data = Record<string, unknown>;

function str(data: Data, key: string): string | null {
  const value = data[key];
  return typeof value === "string" ? value : null;
}

function num(data: Data, key: string): number | null {
  const value = data[key];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function has(data: Data, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(data, key);
}

function asData(value: unknown): Data {
  return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Data) : {};
}

async function findSession(ctx: MutationCtx, sessionId: string): Promise<Doc<"productionSessions"> | null> {
  return await ctx.db
    .query("productionSessions")
    .withIndex("by_session_id", (q) => q.eq("sessionId", sessionId))
    .unique();
}

async function findCamera(
  ctx: MutationCtx,
  sessionId: string,
  camera: string,
): Promise<Doc<"productionCameras"> | null> {
  return await ctx.db
    .query("productionCameras")
    .withIndex("by_session_camera", (q) => q.eq("sessionId", sessionId).eq("camera", camera))
    .unique();
}

/** The session row for an event, created as inferred (active, started at the event) when new. */
async function ensureSession(ctx: MutationCtx, sessionId: string, ts: number): Promise<Doc<"productionSessions">> {
  const found = await findSession(ctx, sessionId);
  if (found !== null) {
    const patch: Partial<Doc<"productionSessions">> = {};
    if (ts < found.startedAt) patch.startedAt = ts;
    if (ts > found.lastEventAt) patch.lastEventAt = ts;
    if (Object.keys(patch).length > 0) await ctx.db.patch(found._id, patch);
    return { ...found, ...patch };
  }
  const doc = {
    sessionId,
    kind: "photoshoot_performance" as const,
    status: "active" as const,
    startedAt: ts,
    inferred: true,
    lastEventAt: ts,
  };
  const _id = await ctx.db.insert("productionSessions", doc);
  return (await ctx.db.get(_id))!;
}

async function applySession(ctx: MutationCtx, event: MmxEvent, data: Data, sessionId: string): Promise<void> {
  const session = await ensureSession(ctx, sessionId, event.ts);
  if (event.type === "session.started") {
    // created, or resumed (a restarted `mmx serve` starts the same session again)
    const patch: Partial<Doc<"productionSessions">> = { status: "active", completedAt: undefined, inferred: false };
    if (session.inferred) patch.startedAt = Math.min(session.startedAt, event.ts);
    for (const key of ["title", "notes", "mode"] as const) {
      if (has(data, key)) patch[key] = str(data, key);
    }
    await ctx.db.patch(session._id, patch);
  } else if (event.type === "session.ended") {
    const { reason: _reason, ...rest } = data;
    const finalState = has(data, "state") ? data.state : rest;
    await ctx.db.patch(session._id, {
      status: "completed",
      completedAt: event.ts,
      endReason: str(data, "reason"),
      finalState,
    });
  } else if (event.type === "director.mode" && has(data, "mode")) {
    await ctx.db.patch(session._id, { mode: str(data, "mode") });
  }
}

async function applyCamera(ctx: MutationCtx, event: MmxEvent, data: Data, sessionId: string): Promise<void> {
  const camera = str(data, "camera");
  if (camera === null) return;
  const found = await findCamera(ctx, sessionId, camera);
  if (event.type === "camera.joined") {
    const fields = {
      device: str(data, "device"),
      name: str(data, "name"),
      model: str(data, "model"),
      role: str(data, "role"),
      facing: str(data, "facing"),
      zoom: num(data, "zoom"),
      lenses: data.lenses ?? null,
      placement: data.placement ?? null,
      source: event.src,
      status: "live" as const,
      leftAt: undefined,
      leftReason: undefined,
      lastEventId: event.id,
    };
    if (found === null) {
      await ctx.db.insert("productionCameras", { sessionId, camera, joinedAt: event.ts, ...fields });
    } else {
      await ctx.db.patch(found._id, fields);
    }
  } else if (event.type === "camera.changed") {
    const patch: Partial<Doc<"productionCameras">> = { lastEventId: event.id };
    for (const key of ["facing", "role"] as const) if (has(data, key)) patch[key] = str(data, key);
    if (has(data, "zoom")) patch.zoom = num(data, "zoom");
    if (has(data, "placement")) patch.placement = data.placement ?? null;
    if (found === null) {
      await ctx.db.insert("productionCameras", {
        sessionId,
        camera,
        source: event.src,
        status: "live",
        joinedAt: event.ts,
        ...patch,
        lastEventId: event.id,
      });
    } else {
      await ctx.db.patch(found._id, patch);
    }
  } else if (event.type === "camera.left") {
    const left = { status: "left" as const, leftAt: event.ts, leftReason: str(data, "reason"), lastEventId: event.id };
    if (found === null) {
      await ctx.db.insert("productionCameras", {
        sessionId,
        camera,
        device: str(data, "device"),
        source: event.src,
        joinedAt: event.ts,
        ...left,
      });
    } else {
      await ctx.db.patch(found._id, left);
    }
  }
}

async function applyDirector(ctx: MutationCtx, event: MmxEvent, data: Data, sessionId: string): Promise<void> {
  await ctx.db.insert("productionDirectorEvents", {
    sessionId,
    eventId: event.id,
    type: event.type,
    ts: event.ts,
    by: str(data, "by"),
    from: str(data, "from"),
    to: str(data, "to"),
    camera: str(data, "camera"),
    proposal: str(data, "proposal"),
    mode: str(data, "mode"),
    previous: str(data, "previous"),
    label: str(data, "label"),
    data,
  });
}

async function applyStill(ctx: MutationCtx, event: MmxEvent, data: Data, sessionId: string): Promise<void> {
  const still = str(data, "still");
  const camera = str(data, "camera");
  if (still === null || camera === null) return;
  await ctx.db.insert("productionStills", {
    sessionId,
    camera,
    still,
    path: str(data, "path"),
    sha256: str(data, "sha256"),
    bytes: num(data, "bytes"),
    width: num(data, "width"),
    height: num(data, "height"),
    eventId: event.id,
    ts: event.ts,
  });
}

/**
 * Store a batch of mmx events (at most MAX_BATCH, in ledger order) and update the projections.
 *
 * Returns `{inserted, skipped}`: how many events were new and how many ids were already stored.
 * Throws (a function error, which the HTTP API answers as `{"status": "error"}`) on a batch
 * larger than MAX_BATCH or an event whose id is empty or longer than 128 characters.
 */
export const ingestEvents = mutation({
  args: { events: v.array(mmxEvent) },
  returns: v.object({ inserted: v.number(), skipped: v.number() }),
  handler: async (ctx, { events }) => {
    if (events.length > MAX_BATCH) {
      throw new Error(`batch of ${events.length} events is larger than ${MAX_BATCH}`);
    }
    let inserted = 0;
    let skipped = 0;
    const now = Date.now() / 1000;
    for (const event of events) {
      if (event.id.length === 0 || event.id.length > MAX_ID_LENGTH) {
        throw new Error(`event id must be 1 to ${MAX_ID_LENGTH} characters, got ${event.id.length}`);
      }
      const stored = await ctx.db
        .query("productionEvents")
        .withIndex("by_event_id", (q) => q.eq("eventId", event.id))
        .first();
      if (stored !== null) {
        skipped += 1;
        continue;
      }
      const data = asData(event.data);
      await ctx.db.insert("productionEvents", {
        eventId: event.id,
        v: event.v,
        seq: event.seq,
        ts: event.ts,
        type: event.type,
        session: event.session,
        src: event.src,
        data,
        ingestedAt: now,
      });
      inserted += 1;
      if (event.session === null) continue;
      const sessionId = event.session;
      await applySession(ctx, event, data, sessionId);
      if (event.type.startsWith("camera.")) await applyCamera(ctx, event, data, sessionId);
      else if (DIRECTOR_TYPES.has(event.type)) await applyDirector(ctx, event, data, sessionId);
      else if (event.type === "still.captured") await applyStill(ctx, event, data, sessionId);
    }
    return { inserted, skipped };
  },
});

/** One session's projection: the session row, its cameras, director events and stills (ts order). */
export const sessionSummary = query({
  args: { sessionId: v.string() },
  handler: async (ctx, { sessionId }) => {
    const session = await ctx.db
      .query("productionSessions")
      .withIndex("by_session_id", (q) => q.eq("sessionId", sessionId))
      .unique();
    if (session === null) return null;
    const cameras = await ctx.db
      .query("productionCameras")
      .withIndex("by_session_camera", (q) => q.eq("sessionId", sessionId))
      .collect();
    const directorEvents = await ctx.db
      .query("productionDirectorEvents")
      .withIndex("by_session_ts", (q) => q.eq("sessionId", sessionId))
      .collect();
    const stills = await ctx.db
      .query("productionStills")
      .withIndex("by_session_ts", (q) => q.eq("sessionId", sessionId))
      .collect();
    return { session, cameras, directorEvents, stills };
  },
});
