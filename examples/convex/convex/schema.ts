// The studio's production tables: the Convex side of the mmx ledger (DESIGN.md, "The ledger").
//
// `productionEvents` keeps every event as received (the source of truth, deduplicated by
// event id); the other tables are projections updated in the same mutation, mirroring the
// local ledger's production_sessions / production_cameras / production_director_events /
// production_stills tables in camelCase.
import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

/** `session.status`: active from `session.started` (or the first event seen), completed at `session.ended`. */
export const sessionStatus = v.union(v.literal("active"), v.literal("completed"));

export default defineSchema({
  productionEvents: defineTable({
    eventId: v.string(),
    v: v.number(),
    seq: v.union(v.number(), v.null()),
    ts: v.number(),
    type: v.string(),
    session: v.union(v.string(), v.null()),
    src: v.string(),
    data: v.any(),
    ingestedAt: v.number(),
  })
    .index("by_event_id", ["eventId"])
    .index("by_session_ts", ["session", "ts"]),

  productionSessions: defineTable({
    sessionId: v.string(),
    kind: v.literal("photoshoot_performance"),
    status: sessionStatus,
    startedAt: v.number(),
    completedAt: v.optional(v.number()),
    title: v.optional(v.union(v.string(), v.null())),
    notes: v.optional(v.union(v.string(), v.null())),
    mode: v.optional(v.union(v.string(), v.null())),
    endReason: v.optional(v.union(v.string(), v.null())),
    finalState: v.optional(v.any()),
    // true while no `session.started` has been seen: the session was inferred from its events
    inferred: v.boolean(),
    lastEventAt: v.number(),
  }).index("by_session_id", ["sessionId"]),

  productionCameras: defineTable({
    sessionId: v.string(),
    camera: v.string(),
    device: v.optional(v.union(v.string(), v.null())),
    name: v.optional(v.union(v.string(), v.null())),
    model: v.optional(v.union(v.string(), v.null())),
    role: v.optional(v.union(v.string(), v.null())),
    facing: v.optional(v.union(v.string(), v.null())),
    zoom: v.optional(v.union(v.number(), v.null())),
    lenses: v.optional(v.any()),
    placement: v.optional(v.any()),
    // the producer that reported the camera (`src` of its camera.joined, e.g. `serve` or `device:<id>`)
    source: v.string(),
    status: v.union(v.literal("live"), v.literal("left")),
    joinedAt: v.number(),
    leftAt: v.optional(v.number()),
    leftReason: v.optional(v.union(v.string(), v.null())),
    lastEventId: v.string(),
  }).index("by_session_camera", ["sessionId", "camera"]),

  productionDirectorEvents: defineTable({
    sessionId: v.string(),
    eventId: v.string(),
    type: v.string(),
    ts: v.number(),
    by: v.optional(v.union(v.string(), v.null())),
    from: v.optional(v.union(v.string(), v.null())),
    to: v.optional(v.union(v.string(), v.null())),
    camera: v.optional(v.union(v.string(), v.null())),
    proposal: v.optional(v.union(v.string(), v.null())),
    mode: v.optional(v.union(v.string(), v.null())),
    previous: v.optional(v.union(v.string(), v.null())),
    label: v.optional(v.union(v.string(), v.null())),
    data: v.any(),
  })
    .index("by_session_ts", ["sessionId", "ts"])
    .index("by_event_id", ["eventId"]),

  productionStills: defineTable({
    sessionId: v.string(),
    camera: v.string(),
    still: v.string(),
    path: v.optional(v.union(v.string(), v.null())),
    sha256: v.optional(v.union(v.string(), v.null())),
    bytes: v.optional(v.union(v.number(), v.null())),
    width: v.optional(v.union(v.number(), v.null())),
    height: v.optional(v.union(v.number(), v.null())),
    eventId: v.string(),
    ts: v.number(),
  })
    .index("by_session_ts", ["sessionId", "ts"])
    .index("by_still", ["still"]),
});
