// The draft gate: drafting continues where draft rows are cheap, stops where they cost about a
// step and most drafts fail, and explores now and then so the estimate follows the machine.
import { test } from "node:test";
import assert from "node:assert/strict";
import { DraftGate } from "../src/engine/draft-gate.js";

test("drafts pass until the cost of a draft row is measured", () => {
  assert.ok(new DraftGate().pays(0, 100));
});

test("cheap draft rows (fixed step cost) keep drafting even at modest acceptance", () => {
  const gate = new DraftGate();
  for (let i = 0; i < 20; i++) {
    gate.record(0, 1.0);
    gate.record(4, 1.2); // four rows add 20% of a step: 5% each
  }
  assert.ok(gate.draftRowCost > 0.03 && gate.draftRowCost < 0.07);
  assert.ok(gate.pays(30, 100));
});

test("compute-bound draft rows stop drafting unless nearly all drafts are accepted", () => {
  const gate = new DraftGate();
  for (let i = 0; i < 20; i++) {
    gate.record(0, 5.0);
    gate.record(4, 22.0); // each row costs 85% of a step
  }
  let allowed = 0;
  for (let i = 0; i < 320; i++) if (gate.pays(63, 100)) allowed++;
  assert.equal(allowed, 10, "only the exploration drafts (1 in 32) get through at 63% acceptance");
  assert.ok(gate.pays(95, 100), "a sequence whose drafts nearly always hold still drafts");
});
