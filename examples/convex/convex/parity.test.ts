/// <reference types="vite/client" />
// The mutation keeps the same projections as the local ledger: testdata/parity.jsonl (the
// example shoot plus out-of-order and sessionless arrivals) ingested here must give exactly
// testdata/parity.expected.json, which tests/test_convex_parity.py checks against a real
// local ledger built from the same stream.
import { convexTest } from "convex-test";
import { expect, test } from "vitest";
import { api } from "./_generated/api";
import schema from "./schema";
import type { MmxEvent } from "./production";
import stream from "./testdata/parity.jsonl?raw";
import expected from "./testdata/parity.expected.json";

const modules = import.meta.glob("./**/!(*.*.*)*.*s");

type Row = Record<string, unknown>;

/** Keep `keys` of each row, absent fields as null (Convex leaves out what SQL stores as NULL). */
function pick(rows: Row[], keys: string[]): Row[] {
  return rows.map((row) => Object.fromEntries(keys.map((k) => [k, row[k] === undefined ? null : row[k]])));
}

function bySessionCamera(a: Row, b: Row): number {
  const ka = `${a.sessionId}\u0000${a.camera}`;
  const kb = `${b.sessionId}\u0000${b.camera}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

test("ingesting the parity stream gives the local ledger's projections", async () => {
  const t = convexTest(schema, modules);
  const events = stream
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => JSON.parse(line) as MmxEvent);
  for (let i = 0; i < events.length; i += 500) {
    await t.mutation(api.production.ingestEvents, { events: events.slice(i, i + 500) });
  }
  const tables = await t.run(async (ctx) => ({
    events: await ctx.db.query("productionEvents").collect(),
    sessions: await ctx.db.query("productionSessions").collect(),
    cameras: await ctx.db.query("productionCameras").collect(),
    director: await ctx.db.query("productionDirectorEvents").collect(),
    stills: await ctx.db.query("productionStills").collect(),
    recordings: await ctx.db.query("productionRecordings").collect(),
  }));
  const keys = (rows: Row[]) => Object.keys(rows[0]);

  expect(tables.events.length).toBe(expected.events[0].count);
  const sessions = [...tables.sessions].sort((a, b) => (a.sessionId < b.sessionId ? -1 : 1));
  expect(pick(sessions, keys(expected.sessions))).toEqual(expected.sessions);
  expect(pick([...tables.cameras].sort(bySessionCamera), keys(expected.cameras))).toEqual(expected.cameras);
  // insertion order is ledger order
  expect(pick(tables.director, keys(expected.directorEvents))).toEqual(expected.directorEvents);
  expect(pick(tables.stills, keys(expected.stills))).toEqual(expected.stills);
  const byPath = (a: Row, b: Row) => {
    const ka = `${a.sessionId}\u0000${a.path}`;
    const kb = `${b.sessionId}\u0000${b.path}`;
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  };
  expect(pick([...tables.recordings].sort(byPath), keys(expected.recordings))).toEqual(expected.recordings);
});
