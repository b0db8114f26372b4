import { test } from "node:test";
import assert from "node:assert/strict";
import { StopMatcher } from "../src/workers/stop-matcher.js";

function run(stops: string[], pieces: string[]): { out: string; stopped: boolean } {
  const m = new StopMatcher(stops);
  let out = "";
  for (const p of pieces) {
    const r = m.push(p);
    out += r.emit;
    if (r.stopped) return { out, stopped: true };
  }
  return { out: out + m.flush(), stopped: false };
}

test("a stop string split across pieces is never emitted", () => {
  assert.deepEqual(run(["END"], ["hello E", "N", "D more"]), { out: "hello ", stopped: true });
});

test("a partial match that does not complete is emitted later", () => {
  assert.deepEqual(run(["END"], ["hello E", "N", "o"]), { out: "hello ENo", stopped: false });
  assert.deepEqual(run(["END"], ["abc", "EN"]), { out: "abcEN", stopped: false });
});

test("the earliest of several stop strings wins", () => {
  assert.deepEqual(run(["xyz", "b"], ["aaxyzb"]), { out: "aa", stopped: true });
});

test("no stop strings passes text through untouched", () => {
  assert.deepEqual(run([], ["a", "b"]), { out: "ab", stopped: false });
});
