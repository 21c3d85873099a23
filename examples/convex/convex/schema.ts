// The studio's production tables: the Convex side of the mmx ledger (DESIGN.md, "The ledger").
//
// `productionEvents` keeps every event as received (the source of truth, deduplicated by
// event id); the other tables are projections updated in the same mutation, mirroring the
// local ledger's production_sessions / production_cameras / production_director_events /
// production_stills / production_recordings tables in camelCase.
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

/** The mmx event envelope (DESIGN.md) without its `id`; `data` is per type and carried as is. */
export const envelopeFields = {
  v: v.number(),
  seq: v.union(v.number(), v.null()),
  ts: v.number(),
  type: v.string(),
  session: v.union(v.string(), v.null()),
  src: v.string(),
  data: v.any(),
};

/** `session.status`: active from `session.started` (or the first event seen), completed at `session.ended`. */
const optStr = v.optional(v.union(v.string(), v.null()));
const optNum = v.optional(v.union(v.number(), v.null()));

export const sessionStatus = v.union(v.literal("active"), v.literal("completed"));

export default defineSchema({
  productionEvents: defineTable({
    eventId: v.string(),
    ...envelopeFields,
    ingestedAt: v.number(),
  })
    .index("by_event_id", ["eventId"])
    .index("by_session_ts", ["session", "ts"]),

  productionSessions: defineTable({
    sessionId: v.string(),
    kind: v.string(), // `photoshoot_performance` unless session.started names another kind
    status: sessionStatus,
    // true while no `session.started` has been seen: the session was inferred from its events
    inferred: v.boolean(),
    title: optStr,
    notes: optStr,
    mode: optStr,
    startedAt: v.number(),
    lastStartedAt: v.number(), // the latest (re)start, for resumes
    completedAt: v.optional(v.number()),
    endReason: optStr,
    finalState: v.optional(v.any()), // session.ended data.state (or its whole data)
    firstEventId: v.string(),
    startedEvent: v.optional(v.string()),
    endedEvent: v.optional(v.string()),
  }).index("by_session_id", ["sessionId"]),

  productionCameras: defineTable({
    sessionId: v.string(),
    camera: v.string(),
    device: optStr,
    name: optStr,
    model: optStr,
    role: optStr,
    facing: optStr,
    zoom: optNum,
    lenses: v.optional(v.any()),
    placement: v.optional(v.any()),
    status: v.union(v.literal("joined"), v.literal("left")),
    inferred: v.boolean(), // seen without camera.joined
    joinedAt: v.optional(v.number()),
    leftAt: v.optional(v.number()),
    leftReason: optStr,
    updatedAt: v.number(), // ts of the newest camera event applied
    src: v.string(), // source identity: `src` of the event that created the row
  }).index("by_session_camera", ["sessionId", "camera"]),

  productionDirectorEvents: defineTable({
    eventId: v.string(),
    sessionId: v.union(v.string(), v.null()),
    ts: v.number(),
    type: v.string(),
    // cut, hold, release, mode, marker, proposed, accepted, vetoed, expired
    kind: v.string(),
    camera: optStr, // cut and proposal: `to`; hold, release, marker: `camera`
    fromCamera: optStr,
    by: optStr,
    proposal: optStr,
    mode: optStr,
    previous: optStr,
    label: optStr,
    score: optNum,
    data: v.any(),
  })
    .index("by_session_ts", ["sessionId", "ts"])
    .index("by_event_id", ["eventId"]),

  productionStills: defineTable({
    eventId: v.string(),
    sessionId: v.union(v.string(), v.null()),
    still: v.string(),
    camera: v.string(),
    path: optStr,
    sha256: optStr,
    bytes: optNum,
    width: optNum,
    height: optNum,
    capturedAt: v.number(),
  })
    .index("by_session_ts", ["sessionId", "capturedAt"])
    .index("by_still", ["still"]),

  // one row per recorded file (recording.started / recording.stopped, in either order; the
  // newest stop wins), as the local production_recordings
  productionRecordings: defineTable({
    sessionId: v.string(),
    path: v.string(),
    camera: optStr, // a camera id, or "program"
    kind: optStr, // iso, program, proxy
    codec: optStr, // vp8, h264, mjpeg
    src: v.string(), // the writer: serve, relay
    take: optStr,
    status: v.union(v.literal("recording"), v.literal("stopped")),
    firstFrameTs: optNum, // wall time of the first frame (Unix s)
    startS: optNum, // that frame on the session clock (s)
    endS: optNum,
    originTs: optNum, // the session clock's zero
    width: optNum,
    height: optNum,
    stoppedAt: optNum, // ts of the newest recording.stopped
    bytes: optNum,
    durationS: optNum,
    frames: optNum,
    dropped: optNum,
    sha256: optStr,
    reason: optStr,
    startedEvent: optStr,
    stoppedEvent: optStr,
  }).index("by_session_path", ["sessionId", "path"]),
});
