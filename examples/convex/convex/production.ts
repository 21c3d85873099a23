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
import { envelopeFields } from "./schema";

/** The mmx event envelope (DESIGN.md), as the mutation takes it. */
export const mmxEvent = v.object({ id: v.string(), ...envelopeFields });
export type MmxEvent = Infer<typeof mmxEvent>;

/** Most events one call may carry; the client (mmx ledger sync) sends at most this many. */
export const MAX_BATCH = 500;
const MAX_ID_LENGTH = 128;

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

/** `new ?? old`: a field the event does not carry keeps the stored value (SQL coalesce). */
function keep<T>(fresh: T | null, old: T | null | undefined): T | null {
  return fresh ?? old ?? null;
}

/**
 * The session projection. Mirrors the local ledger's triggers (mmx/ledger/schema.py):
 * `session.started` creates or resumes; `session.ended` completes; any other event of an
 * unknown session creates it as inferred. Out-of-order arrival is settled by event time: an
 * end older than the latest start does not complete a resumed session, and a start older
 * than the recorded end does not reopen it.
 */
async function applySession(ctx: MutationCtx, event: MmxEvent, data: Data, sessionId: string): Promise<void> {
  const found = await findSession(ctx, sessionId);
  const ts = event.ts;
  if (event.type === "session.started") {
    const kind = str(data, "kind") ?? "photoshoot_performance";
    if (found === null) {
      await ctx.db.insert("productionSessions", {
        sessionId, kind, status: "active", inferred: false,
        title: str(data, "title"), notes: str(data, "notes"), mode: str(data, "mode"),
        startedAt: ts, lastStartedAt: ts, firstEventId: event.id, startedEvent: event.id,
      });
      return;
    }
    const reopen = found.completedAt === undefined || ts > found.completedAt;
    await ctx.db.patch(found._id, {
      kind,
      title: keep(str(data, "title"), found.title),
      notes: keep(str(data, "notes"), found.notes),
      mode: keep(str(data, "mode"), found.mode),
      inferred: false,
      startedEvent: found.startedEvent ?? event.id,
      startedAt: found.inferred ? ts : Math.min(found.startedAt, ts),
      // a row inferred from ordinary events had no real start: its first real one is the latest
      lastStartedAt: inferredFromEvents(found) ? ts : Math.max(found.lastStartedAt, ts),
      ...(reopen ? { status: "active" as const, completedAt: undefined } : {}),
    });
  } else if (event.type === "session.ended") {
    const ending = {
      status: "completed" as const, completedAt: ts, endReason: str(data, "reason"),
      finalState: data.state ?? data, endedEvent: event.id,
    };
    if (found === null) {
      await ctx.db.insert("productionSessions", {
        sessionId, kind: "photoshoot_performance", inferred: true, startedAt: ts, lastStartedAt: ts,
        firstEventId: event.id, ...ending,
      });
    } else if (ts >= found.lastStartedAt) {
      await ctx.db.patch(found._id, ending);
    }
  } else if (found === null) {
    await ctx.db.insert("productionSessions", {
      sessionId, kind: "photoshoot_performance", status: "active", inferred: true,
      startedAt: ts, lastStartedAt: ts, firstEventId: event.id,
    });
  } else if (inferredFromEvents(found) && ts < found.startedAt) {
    // an inferred session starts at its earliest event, whatever the arrival order
    await ctx.db.patch(found._id, { startedAt: ts, lastStartedAt: ts });
  }
}

/** A session row created from ordinary events (no session.started, no session.ended yet). */
function inferredFromEvents(session: Doc<"productionSessions">): boolean {
  return session.inferred && session.endedEvent === undefined;
}

/** The camera projection (camera.joined / camera.changed / camera.left), as the local ledger keeps it. */
async function applyCamera(ctx: MutationCtx, event: MmxEvent, data: Data, sessionId: string): Promise<void> {
  const camera = str(data, "camera");
  if (camera === null) return;
  const found = await findCamera(ctx, sessionId, camera);
  const ts = event.ts;
  const placement = has(data, "placement") ? data.placement : null;
  if (event.type === "camera.joined") {
    const lenses = has(data, "lenses") ? data.lenses : null;
    if (found === null) {
      await ctx.db.insert("productionCameras", {
        sessionId, camera, device: str(data, "device"), name: str(data, "name"), model: str(data, "model"),
        role: str(data, "role"), facing: str(data, "facing"), zoom: num(data, "zoom"), lenses, placement,
        status: "joined", inferred: false, joinedAt: ts, updatedAt: ts, src: event.src,
      });
      return;
    }
    const leftLater = found.leftAt !== undefined && found.leftAt > ts;
    await ctx.db.patch(found._id, {
      device: keep(str(data, "device"), found.device),
      name: keep(str(data, "name"), found.name),
      model: keep(str(data, "model"), found.model),
      role: keep(str(data, "role"), found.role),
      facing: keep(str(data, "facing"), found.facing),
      zoom: keep(num(data, "zoom"), found.zoom),
      lenses: lenses ?? found.lenses ?? null,
      placement: placement ?? found.placement ?? null,
      status: leftLater ? found.status : "joined",
      inferred: false,
      joinedAt: found.joinedAt === undefined ? ts : Math.min(found.joinedAt, ts),
      updatedAt: Math.max(found.updatedAt, ts),
    });
  } else if (event.type === "camera.changed") {
    if (found === null) {
      await ctx.db.insert("productionCameras", {
        sessionId, camera, role: str(data, "role"), facing: str(data, "facing"), zoom: num(data, "zoom"),
        placement, status: "joined", inferred: true, joinedAt: ts, updatedAt: ts, src: event.src,
      });
      return;
    }
    // only a change newer than what the row shows is applied
    const newer = ts >= found.updatedAt;
    await ctx.db.patch(found._id, {
      ...(newer
        ? {
            role: keep(str(data, "role"), found.role),
            facing: keep(str(data, "facing"), found.facing),
            zoom: keep(num(data, "zoom"), found.zoom),
            placement: placement ?? found.placement ?? null,
          }
        : {}),
      updatedAt: Math.max(found.updatedAt, ts),
    });
  } else if (event.type === "camera.left") {
    if (found === null) {
      await ctx.db.insert("productionCameras", {
        sessionId, camera, device: str(data, "device"), status: "left", inferred: true, leftAt: ts,
        leftReason: str(data, "reason"), updatedAt: ts, src: event.src,
      });
      return;
    }
    await ctx.db.patch(found._id, {
      status: ts >= (found.joinedAt ?? ts) ? "left" : found.status,
      leftAt: Math.max(found.leftAt ?? ts, ts),
      leftReason: str(data, "reason"),
      updatedAt: Math.max(found.updatedAt, ts),
    });
  }
}

const CAMERA_TYPES = new Set(["camera.joined", "camera.changed", "camera.left"]);

const DIRECTOR_KIND: Record<string, string> = {
  "director.cut": "cut",
  "director.hold": "hold",
  "director.release": "release",
  "director.mode": "mode",
  "still.marker": "marker",
  "ghost.proposed": "proposed",
  "ghost.accepted": "accepted",
  "ghost.vetoed": "vetoed",
  "ghost.expired": "expired",
};

async function applyDirector(ctx: MutationCtx, event: MmxEvent, data: Data): Promise<void> {
  const toCamera = event.type === "director.cut" || event.type === "ghost.proposed";
  await ctx.db.insert("productionDirectorEvents", {
    eventId: event.id,
    sessionId: event.session,
    ts: event.ts,
    type: event.type,
    kind: DIRECTOR_KIND[event.type],
    camera: str(data, toCamera ? "to" : "camera"),
    fromCamera: str(data, "from"),
    by: str(data, "by"),
    proposal: str(data, "proposal"),
    mode: str(data, "mode"),
    previous: str(data, "previous"),
    label: str(data, "label"),
    score: num(data, "score"),
    data,
  });
}

async function applyStill(ctx: MutationCtx, event: MmxEvent, data: Data): Promise<void> {
  const still = str(data, "still");
  const camera = str(data, "camera");
  if (still === null || camera === null) return;
  await ctx.db.insert("productionStills", {
    eventId: event.id,
    sessionId: event.session,
    still,
    camera,
    path: str(data, "path"),
    sha256: str(data, "sha256"),
    bytes: num(data, "bytes"),
    width: num(data, "width"),
    height: num(data, "height"),
    capturedAt: event.ts,
  });
}

const RECORDING_TYPES = new Set(["recording.started", "recording.stopped"]);

/**
 * The recording projection: one row per (session, path). A start fills what a stop left
 * empty; of several stops the newest (by event time) wins, as the local ledger's upsert.
 */
async function applyRecording(ctx: MutationCtx, event: MmxEvent, data: Data, sessionId: string): Promise<void> {
  const path = str(data, "path");
  if (path === null) return;
  const found = await ctx.db
    .query("productionRecordings")
    .withIndex("by_session_path", (q) => q.eq("sessionId", sessionId).eq("path", path))
    .unique();
  const common = {
    camera: str(data, "camera"), kind: str(data, "kind"), codec: str(data, "codec"), take: str(data, "take"),
    startS: num(data, "start_s"), originTs: num(data, "origin_ts"), width: num(data, "width"),
    height: num(data, "height"),
  };
  const firstFrameTs =
    event.type === "recording.started"
      ? num(data, "first_frame_ts") ?? num(data, "started_at") ?? event.ts
      : num(data, "first_frame_ts");
  const stop = {
    stoppedAt: event.ts, endS: num(data, "end_s"), bytes: num(data, "bytes"), durationS: num(data, "duration_s"),
    frames: num(data, "frames"), dropped: num(data, "dropped"), sha256: str(data, "sha256"),
    reason: str(data, "reason"), stoppedEvent: event.id,
  };
  if (found === null) {
    await ctx.db.insert("productionRecordings", {
      sessionId, path, src: event.src, ...common, firstFrameTs,
      ...(event.type === "recording.started"
        ? { status: "recording" as const, startedEvent: event.id }
        : { status: "stopped" as const, ...stop }),
    });
    return;
  }
  const filled = {
    camera: keep(found.camera, common.camera), kind: keep(found.kind, common.kind),
    codec: keep(found.codec, common.codec), take: keep(found.take, common.take),
    firstFrameTs: keep(found.firstFrameTs, firstFrameTs), startS: keep(found.startS, common.startS),
    originTs: keep(found.originTs, common.originTs), width: keep(found.width, common.width),
    height: keep(found.height, common.height),
  };
  if (event.type === "recording.started") {
    await ctx.db.patch(found._id, { ...filled, src: event.src, startedEvent: found.startedEvent ?? event.id });
  } else {
    const newer = found.stoppedAt === undefined || found.stoppedAt === null || event.ts >= found.stoppedAt;
    await ctx.db.patch(found._id, {
      ...filled, status: "stopped",
      ...(newer ? stop : { stoppedAt: Math.max(found.stoppedAt ?? event.ts, event.ts) }),
    });
  }
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
      if (event.session !== null) {
        await applySession(ctx, event, data, event.session);
        if (CAMERA_TYPES.has(event.type)) await applyCamera(ctx, event, data, event.session);
        else if (RECORDING_TYPES.has(event.type)) await applyRecording(ctx, event, data, event.session);
      }
      // like the local ledger, director events and stills are kept even without a session
      if (has(DIRECTOR_KIND, event.type)) await applyDirector(ctx, event, data);
      else if (event.type === "still.captured") await applyStill(ctx, event, data);
    }
    return { inserted, skipped };
  },
});

/** One session's projection: the session row, its cameras, director events, stills (ts order) and recordings. */
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
    const recordings = await ctx.db
      .query("productionRecordings")
      .withIndex("by_session_path", (q) => q.eq("sessionId", sessionId))
      .collect();
    return { session, cameras, directorEvents, stills, recordings };
  },
});
