/// <reference types="vite/client" />
import { convexTest } from "convex-test";
import { describe, expect, test } from "vitest";
import { api } from "./_generated/api";
import schema from "./schema";
import type { MmxEvent } from "./production";

const modules = import.meta.glob("./**/!(*.*.*)*.*s");

const S = "01JD3J0000000000000000SESS";
let counter = 0;

function ev(type: string, data: Record<string, unknown> = {}, over: Partial<MmxEvent> = {}): MmxEvent {
  counter += 1;
  return {
    v: 1,
    id: `01JD3K${String(counter).padStart(20, "0")}`,
    seq: counter,
    ts: 1795264000 + counter,
    type,
    session: S,
    src: "serve",
    data,
    ...over,
  };
}

function shoot(): MmxEvent[] {
  return [
    ev("session.started", { kind: "photoshoot_performance", title: "Spring lookbook", notes: "two dancers", mode: "manual" }),
    ev("camera.joined", { camera: "cam-1", device: "dev-a", name: "iPhone A", role: "wide", facing: "back", zoom: 1, placement: { label: "front", azimuth_deg: 0 } }, { src: "device:dev-a" }),
    ev("camera.joined", { camera: "cam-2", device: "dev-b", name: "iPad B", facing: "back", zoom: 1 }),
    ev("camera.changed", { camera: "cam-2", zoom: 0.5, placement: { label: "left", azimuth_deg: -60 } }),
    ev("director.cut", { from: "cam-1", to: "cam-2", by: "operator" }),
    ev("ghost.proposed", { proposal: "p-1", from: "cam-2", to: "cam-1", score: 0.8 }, { src: "ghost" }),
    ev("ghost.accepted", { proposal: "p-1", by: "operator" }, { src: "ghost" }),
    ev("director.cut", { from: "cam-2", to: "cam-1", by: "ghost", proposal: "p-1" }),
    ev("director.hold", { camera: "cam-1", by: "operator" }),
    ev("director.release", { camera: "cam-1", by: "operator" }),
    ev("director.mode", { mode: "ghost", previous: "manual" }),
    ev("still.captured", { still: "st-1", camera: "cam-1", path: "stills/cam-1/st-1.jpg", sha256: "ab".repeat(32), bytes: 1234, width: 4032, height: 3024 }),
    ev("still.marker", { label: "jump", camera: "cam-2" }, { src: "operator" }),
    ev("pose.sample", { camera: "cam-1", t: 1795264001.5, joints: null }),
    ev("studio.lights", { scene: "blue" }, { src: "lights" }),
    ev("camera.left", { camera: "cam-2", reason: "disconnected" }),
    ev("session.ended", { reason: "operator", state: { program: "cam-1" } }),
  ];
}

async function tableCounts(t: ReturnType<typeof convexTest>) {
  return await t.run(async (ctx) => ({
    events: (await ctx.db.query("productionEvents").collect()).length,
    sessions: (await ctx.db.query("productionSessions").collect()).length,
    cameras: (await ctx.db.query("productionCameras").collect()).length,
    director: (await ctx.db.query("productionDirectorEvents").collect()).length,
    stills: (await ctx.db.query("productionStills").collect()).length,
  }));
}

describe("production:ingestEvents", () => {
  test("a whole shoot lands in the events table and every projection", async () => {
    const t = convexTest(schema, modules);
    const events = shoot();
    const result = await t.mutation(api.production.ingestEvents, { events });
    expect(result).toEqual({ inserted: events.length, skipped: 0 });

    const summary = await t.query(api.production.sessionSummary, { sessionId: S });
    expect(summary).not.toBeNull();
    const { session, cameras, directorEvents, stills } = summary!;
    expect(session).toMatchObject({
      sessionId: S,
      kind: "photoshoot_performance",
      status: "completed",
      startedAt: events[0].ts,
      completedAt: events[events.length - 1].ts,
      title: "Spring lookbook",
      notes: "two dancers",
      mode: "manual",
      endReason: "operator",
      finalState: { program: "cam-1" },
      inferred: false,
    });

    const byCamera = Object.fromEntries(cameras.map((c) => [c.camera, c]));
    expect(byCamera["cam-1"]).toMatchObject({ device: "dev-a", role: "wide", src: "device:dev-a", status: "joined", inferred: false, placement: { label: "front", azimuth_deg: 0 } });
    expect(byCamera["cam-2"]).toMatchObject({ device: "dev-b", zoom: 0.5, status: "left", leftReason: "disconnected", placement: { label: "left", azimuth_deg: -60 } });

    expect(directorEvents.map((d) => d.type)).toEqual([
      "director.cut",
      "ghost.proposed",
      "ghost.accepted",
      "director.cut",
      "director.hold",
      "director.release",
      "director.mode",
      "still.marker",
    ]);
    expect(directorEvents.map((d) => d.kind)).toEqual(["cut", "proposed", "accepted", "cut", "hold", "release", "mode", "marker"]);
    expect(directorEvents[3]).toMatchObject({ fromCamera: "cam-2", camera: "cam-1", by: "ghost", proposal: "p-1" });
    expect(directorEvents[1]).toMatchObject({ camera: "cam-1", score: 0.8 });
    expect(directorEvents[6]).toMatchObject({ mode: "ghost", previous: "manual" });
    expect(directorEvents[7]).toMatchObject({ label: "jump", camera: "cam-2" });

    expect(stills).toHaveLength(1);
    expect(stills[0]).toMatchObject({ still: "st-1", camera: "cam-1", bytes: 1234, width: 4032, height: 3024, eventId: events[11].id });

    // unknown types and pose samples are stored as events, never dropped, never projected
    const stored = await t.run(async (ctx) => await ctx.db.query("productionEvents").collect());
    expect(stored.map((e) => e.type)).toContain("studio.lights");
    expect(stored.find((e) => e.type === "studio.lights")).toMatchObject({ src: "lights", data: { scene: "blue" } });
  });

  test("a retried batch changes nothing: ids already stored are skipped", async () => {
    const t = convexTest(schema, modules);
    const events = shoot();
    await t.mutation(api.production.ingestEvents, { events: events.slice(0, 10) });
    const before = await tableCounts(t);
    // the answer to the first call was lost: the client sends the overlapping batch again
    const again = await t.mutation(api.production.ingestEvents, { events });
    expect(again).toEqual({ inserted: events.length - 10, skipped: 10 });
    const third = await t.mutation(api.production.ingestEvents, { events });
    expect(third).toEqual({ inserted: 0, skipped: events.length });
    const after = await tableCounts(t);
    expect(before.events).toBe(10);
    expect(after).toEqual({ events: events.length, sessions: 1, cameras: 2, director: 8, stills: 1 });
  });

  test("the same id twice in one batch is stored once", async () => {
    const t = convexTest(schema, modules);
    const cut = ev("director.cut", { from: "cam-1", to: "cam-2", by: "operator" });
    const result = await t.mutation(api.production.ingestEvents, { events: [cut, { ...cut }] });
    expect(result).toEqual({ inserted: 1, skipped: 1 });
    expect((await tableCounts(t)).director).toBe(1);
  });

  test("events of a session never started create it as inferred; a late start adopts it", async () => {
    const t = convexTest(schema, modules);
    const other = "01JD3J0000000000000000OTHR";
    const cut = ev("director.cut", { to: "cam-3", by: "operator" }, { session: other, ts: 1795265000 });
    await t.mutation(api.production.ingestEvents, { events: [cut] });
    let summary = await t.query(api.production.sessionSummary, { sessionId: other });
    expect(summary!.session).toMatchObject({ status: "active", inferred: true, startedAt: 1795265000, kind: "photoshoot_performance" });

    const started = ev("session.started", { title: "late" }, { session: other, ts: 1795264990 });
    await t.mutation(api.production.ingestEvents, { events: [started] });
    summary = await t.query(api.production.sessionSummary, { sessionId: other });
    expect(summary!.session).toMatchObject({ status: "active", inferred: false, startedAt: 1795264990, title: "late" });
  });

  test("a completed session started again is resumed as active", async () => {
    const t = convexTest(schema, modules);
    const sid = "01JD3J0000000000000000RESM";
    await t.mutation(api.production.ingestEvents, {
      events: [
        ev("session.started", { title: "take 1" }, { session: sid }),
        ev("session.ended", { reason: "shutdown" }, { session: sid }),
      ],
    });
    let summary = await t.query(api.production.sessionSummary, { sessionId: sid });
    expect(summary!.session.status).toBe("completed");
    expect(summary!.session.completedAt).toBeTypeOf("number");
    await t.mutation(api.production.ingestEvents, { events: [ev("session.started", {}, { session: sid })] });
    summary = await t.query(api.production.sessionSummary, { sessionId: sid });
    expect(summary!.session.status).toBe("active");
    expect(summary!.session.completedAt).toBeUndefined();
    expect(summary!.session.title).toBe("take 1");
  });

  test("events without a session are stored but touch no projection", async () => {
    const t = convexTest(schema, modules);
    await t.mutation(api.production.ingestEvents, {
      events: [ev("music.cue", { track: "f".repeat(64) }, { session: null, seq: null })],
    });
    expect(await tableCounts(t)).toEqual({ events: 1, sessions: 0, cameras: 0, director: 0, stills: 0 });
  });

  test("a batch over 500 events is a function error and stores nothing", async () => {
    const t = convexTest(schema, modules);
    const events = Array.from({ length: 501 }, () => ev("still.marker", { label: "x" }));
    await expect(t.mutation(api.production.ingestEvents, { events })).rejects.toThrow(/larger than 500/);
    expect((await tableCounts(t)).events).toBe(0);
  });

  test("an event that breaks the envelope validator is rejected", async () => {
    const t = convexTest(schema, modules);
    const bad = { v: 1, id: "x", seq: 1, type: "director.cut", session: S, src: "serve", data: {} };
    // ts is missing: the args validator refuses the whole call
    await expect(
      t.mutation(api.production.ingestEvents, { events: [bad as unknown as MmxEvent] }),
    ).rejects.toThrow(/ts/);
    const tooLong = ev("director.cut", { to: "cam-1" }, { id: "x".repeat(129) });
    await expect(t.mutation(api.production.ingestEvents, { events: [tooLong] })).rejects.toThrow(/1 to 128/);
    expect((await tableCounts(t)).events).toBe(0);
  });
});

describe("out-of-order arrival is settled by event time, as in the local ledger", () => {
  test("an end older than the latest start does not complete a resumed session", async () => {
    const t = convexTest(schema, modules);
    const sid = "01JD3J0000000000000000ORDR";
    await t.mutation(api.production.ingestEvents, {
      events: [
        ev("session.started", {}, { session: sid, ts: 100 }),
        ev("session.started", {}, { session: sid, ts: 300 }), // resumed after a restart
        ev("session.ended", { reason: "shutdown" }, { session: sid, ts: 200 }), // the first run's end, late
      ],
    });
    const summary = await t.query(api.production.sessionSummary, { sessionId: sid });
    expect(summary!.session).toMatchObject({ status: "active", startedAt: 100, lastStartedAt: 300 });
    expect(summary!.session.completedAt).toBeUndefined();
  });

  test("a start older than the recorded end does not reopen the session", async () => {
    const t = convexTest(schema, modules);
    const sid = "01JD3J0000000000000000ORD2";
    await t.mutation(api.production.ingestEvents, {
      events: [
        ev("session.ended", { reason: "operator" }, { session: sid, ts: 500 }),
        ev("session.started", { title: "late start" }, { session: sid, ts: 400 }),
      ],
    });
    const summary = await t.query(api.production.sessionSummary, { sessionId: sid });
    expect(summary!.session).toMatchObject({ status: "completed", completedAt: 500, startedAt: 400, title: "late start", inferred: false });
  });

  test("a camera change older than the row is not applied; a late join does not undo a later leave", async () => {
    const t = convexTest(schema, modules);
    const sid = "01JD3J0000000000000000ORD3";
    await t.mutation(api.production.ingestEvents, {
      events: [
        ev("camera.left", { camera: "cam-9", reason: "battery" }, { session: sid, ts: 50 }),
        ev("camera.joined", { camera: "cam-9", device: "dev-9", zoom: 1 }, { session: sid, ts: 10 }),
        ev("camera.changed", { camera: "cam-9", zoom: 2 }, { session: sid, ts: 20 }),
      ],
    });
    const summary = await t.query(api.production.sessionSummary, { sessionId: sid });
    expect(summary!.cameras).toHaveLength(1);
    expect(summary!.cameras[0]).toMatchObject({ status: "left", joinedAt: 10, leftAt: 50, device: "dev-9", zoom: 1, inferred: false });
  });

  test("director events and stills without a session are kept, as locally", async () => {
    const t = convexTest(schema, modules);
    await t.mutation(api.production.ingestEvents, {
      events: [
        ev("still.captured", { still: "st-9", camera: "cam-1" }, { session: null }),
        ev("toString", {}, { session: null }), // an unknown type named like an Object method
      ],
    });
    expect(await tableCounts(t)).toEqual({ events: 2, sessions: 0, cameras: 0, director: 0, stills: 1 });
  });

  test("recordings: one row per file; a stop before its start and the newest of two stops win", async () => {
    const t = convexTest(schema, modules);
    const sid = "01JD3J0000000000000000REC1";
    const iso = "/data/sessions/x/video/cam-1.mkv";
    const events = [
      ev("session.started", {}, { session: sid, ts: 100 }),
      ev("recording.stopped", { camera: "cam-1", path: iso, reason: "writer_lost", bytes: 10 }, { session: sid, ts: 160 }),
      ev("recording.started", { camera: "cam-1", path: iso, codec: "vp8", kind: "iso", first_frame_ts: 100.5, start_s: 0.5, width: 640, height: 360 }, { session: sid, ts: 101, src: "relay" }),
      ev("recording.stopped", { camera: "cam-1", path: iso, reason: "session_ended", bytes: 9000, frames: 1800, dropped: 1, duration_s: 60, sha256: "ab".repeat(32) }, { session: sid, ts: 161, src: "relay" }),
      ev("recording.stopped", { camera: "cam-1", path: iso, reason: "stale", bytes: 1 }, { session: sid, ts: 150 }),
      ev("recording.started", { camera: "program", path: "/data/sessions/x/video/program.mkv", kind: "program" }, { session: sid, ts: 102, src: "relay" }),
    ];
    await t.mutation(api.production.ingestEvents, { events });
    await t.mutation(api.production.ingestEvents, { events }); // a retry changes nothing
    const { recordings } = (await t.query(api.production.sessionSummary, { sessionId: sid }))!;
    expect(recordings).toHaveLength(2);
    const byPath = Object.fromEntries(recordings.map((r) => [r.path, r]));
    expect(byPath[iso]).toMatchObject({
      camera: "cam-1", kind: "iso", codec: "vp8", status: "stopped", src: "relay", firstFrameTs: 100.5, startS: 0.5,
      reason: "session_ended", bytes: 9000, frames: 1800, dropped: 1, durationS: 60, stoppedAt: 161, width: 640,
    });
    expect(byPath["/data/sessions/x/video/program.mkv"]).toMatchObject({ status: "recording", kind: "program", firstFrameTs: 102 });
  });
});
