// docs/errors.md lists every error code with its status and type: keep it in step with the
// one table in src/errors.ts, both ways (as Fastify checks its own errors documentation).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ERRORS } from "../src/errors.js";

const doc = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");

/** The table's rows: | `code` | status | `type` | meaning | */
function documented(): Map<string, { status: number; type: string }> {
  const rows = new Map<string, { status: number; type: string }>();
  for (const line of doc.split("\n")) {
    const m = /^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|\s*`([a-z_]+)`\s*\|\s*\S.*\|\s*$/.exec(line);
    if (!m) continue;
    assert.ok(!rows.has(m[1]!), `${m[1]} is listed twice`);
    rows.set(m[1]!, { status: Number(m[2]), type: m[3]! });
  }
  return rows;
}

test("every code in src/errors.ts is documented with its status and type", () => {
  const rows = documented();
  for (const [code, entry] of Object.entries(ERRORS)) {
    const row = rows.get(code);
    assert.ok(row, `docs/errors.md lacks a row for ${code}`);
    assert.deepEqual(row, { status: entry.status, type: entry.type }, `docs/errors.md row of ${code}`);
  }
});

test("every documented code exists in src/errors.ts", () => {
  for (const code of documented().keys()) assert.ok(code in ERRORS, `docs/errors.md lists ${code}, which src/errors.ts does not define`);
});
