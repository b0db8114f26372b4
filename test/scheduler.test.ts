import { test } from "node:test";
import assert from "node:assert/strict";
import { MoltbotError } from "../src/errors.js";
import { ModelScheduler, type ModelSchedulerOptions, type SchedulerTimers, type SlotLease } from "../src/scheduler/model-scheduler.js";
import { admissionKey, compareAdmission, effectiveRank, type Priority } from "../src/scheduler/priority.js";

/** A clock and timers the test moves by hand: nothing sleeps. */
class FakeTime implements SchedulerTimers {
  now = 0;
  private nextId = 1;
  private readonly due = new Map<number, { at: number; fn: () => void }>();

  readonly clock = (): number => this.now;

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.due.set(id, { at: this.now + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.due.delete(handle as number);
  }

  get pending(): number {
    return this.due.size;
  }

  /** Move the clock forward, firing due timers in order (each at its own instant). */
  advance(ms: number): void {
    const end = this.now + ms;
    for (;;) {
      let first: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.due) if (e[1].at <= end && (!first || e[1].at < first[1].at)) first = e;
      if (!first) break;
      this.due.delete(first[0]);
      this.now = Math.max(this.now, first[1].at);
      first[1].fn();
    }
    this.now = end;
  }
}

function setup(opts: Partial<ModelSchedulerOptions> = {}): { s: ModelScheduler; time: FakeTime } {
  const time = new FakeTime();
  const s = new ModelScheduler({ slots: 1, maxQueue: 10, maxWaitMs: 60_000, clock: time.clock, timers: time, ...opts });
  return { s, time };
}

/** Settle pending promise callbacks (microtasks only; no timers run). */
const flush = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Queue a request and record the order in which requests are admitted. */
function track(s: ModelScheduler, order: string[], label: string, priority: Priority, signal?: AbortSignal) {
  const state: { lease?: SlotLease; error?: unknown } = {};
  const p = s.acquire(priority, signal).then(
    (lease) => {
      order.push(label);
      state.lease = lease;
    },
    (err: unknown) => {
      state.error = err;
    },
  );
  return { state, p };
}

function assertShed(err: unknown, code: "queue_full" | "queue_timeout"): MoltbotError {
  assert.ok(err instanceof MoltbotError, `expected a MoltbotError, got ${String(err)}`);
  assert.equal(err.code, code);
  assert.equal(err.status, 429);
  assert.ok(err.retryAfterS !== undefined && Number.isInteger(err.retryAfterS) && err.retryAfterS >= 1, `retryAfterS ${err.retryAfterS}`);
  return err;
}

test("slots bound concurrency, and a free slot admits without a timer", async () => {
  const { s, time } = setup({ slots: 2 });
  const a = await s.acquire("normal");
  const b = await s.acquire("low");
  assert.equal(s.inflight, 2);
  assert.equal(time.pending, 0);
  const order: string[] = [];
  const c = track(s, order, "c", "high");
  await flush();
  assert.deepEqual(order, []);
  assert.equal(s.queued, 1);
  assert.equal(s.inflight, 2);
  a.release();
  b.release();
  await c.p;
  assert.deepEqual(order, ["c"]);
  assert.equal(s.inflight, 1);
  assert.equal(s.queued, 0);
  assert.equal(time.pending, 0, "the max-wait timer is cleared once the queue is empty");
});

test("release admits the next request in the same tick", async () => {
  const { s } = setup();
  const a = await s.acquire("normal");
  const order: string[] = [];
  const b = track(s, order, "b", "normal");
  a.release();
  // No await yet: the slot has already changed hands.
  assert.equal(s.inflight, 1);
  assert.equal(s.queued, 0);
  await b.p;
  assert.deepEqual(order, ["b"]);
});

test("higher priority is served first when the slot is taken; ties are FIFO", async () => {
  const { s, time } = setup();
  let lease = await s.acquire("normal");
  const order: string[] = [];
  const reqs = {
    low1: track(s, order, "low1", "low"),
    normal1: track(s, order, "normal1", "normal"),
    high1: track(s, order, "high1", "high"),
    low2: track(s, order, "low2", "low"),
    high2: track(s, order, "high2", "high"),
  };
  assert.deepEqual(s.queuedByPriority(), { high: 2, normal: 1, low: 2 });
  lease = await drainInOrder(reqs, order, lease, () => time.advance(1));
  lease.release();
  assert.deepEqual(order, ["high1", "high2", "normal1", "low1", "low2"]);
  assert.equal(s.inflight, 0);
});

/** Release the running lease, wait for the next admission, repeat until all were admitted; returns the last lease. */
async function drainInOrder(
  reqs: Record<string, { state: { lease?: SlotLease } }>,
  order: string[],
  lease: SlotLease,
  between: () => void = () => {},
): Promise<SlotLease> {
  for (let i = 0; i < Object.keys(reqs).length; i++) {
    between();
    lease.release();
    await flush();
    const next = reqs[order[i]!]?.state.lease;
    assert.ok(next, `request #${i} admitted`);
    lease = next;
  }
  return lease;
}

test("aging lets an old low-priority request pass newer high ones", async () => {
  const { s, time } = setup({ agingMs: 1000 });
  let lease = await s.acquire("normal");
  const order: string[] = [];
  const held: Record<string, { state: { lease?: SlotLease } }> = {};
  held.low = track(s, order, "low", "low"); // t=0: key 0 + 2*1000 = 2000
  time.advance(500);
  held.high1 = track(s, order, "high1", "high"); // key 500: still ahead of low
  time.advance(2000);
  held.high2 = track(s, order, "high2", "high"); // t=2500: key 2500, behind low
  time.advance(100);
  held.high3 = track(s, order, "high3", "high");
  lease = await drainInOrder(held, order, lease);
  assert.deepEqual(order, ["high1", "low", "high2", "high3"]);
  lease.release();
  assert.equal(s.inflight, 0);
});

test("the aging policy orders requests the same at every instant", () => {
  const agingMs = 5000;
  const reqs = [
    { p: "low" as const, t: 0 },
    { p: "high" as const, t: 7000 },
    { p: "normal" as const, t: 3000 },
    { p: "high" as const, t: 9999 },
  ].map((r, seq) => ({ ...r, seq, key: admissionKey(r.p, r.t, agingMs) }));
  const byKey = [...reqs].sort(compareAdmission).map((r) => r.seq);
  for (const now of [10_000, 20_000, 1e6]) {
    const byRank = [...reqs]
      .sort((a, b) => effectiveRank(a.p, now - a.t, agingMs) - effectiveRank(b.p, now - b.t, agingMs) || a.seq - b.seq)
      .map((r) => r.seq);
    assert.deepEqual(byRank, byKey, `at ${now}`);
  }
  // low at 0 (key 10000) ties with high at 10000: the earlier arrival goes first.
  assert.ok(compareAdmission({ key: admissionKey("low", 0, agingMs), seq: 0 }, { key: admissionKey("high", 10_000, agingMs), seq: 1 }) < 0);
});

test("a full queue sheds the newest of the lowest priority, and refuses a newcomer that is the lowest", async () => {
  const { s } = setup({ maxQueue: 3 });
  const running = await s.acquire("normal");
  const order: string[] = [];
  const low1 = track(s, order, "low1", "low");
  const normal1 = track(s, order, "normal1", "normal");
  const low2 = track(s, order, "low2", "low");

  // A high newcomer displaces the newest low.
  const high1 = track(s, order, "high1", "high");
  await flush();
  assertShed(low2.state.error, "queue_full");
  assert.equal(low1.state.error, undefined);
  assert.deepEqual(s.queuedByPriority(), { high: 1, normal: 1, low: 1 });

  // A normal newcomer displaces the remaining low.
  const normal2 = track(s, order, "normal2", "normal");
  await flush();
  assertShed(low1.state.error, "queue_full");
  assert.deepEqual(s.queuedByPriority(), { high: 1, normal: 2, low: 0 });

  // A low newcomer is the lowest: it is refused and nothing queued is touched.
  const low3 = track(s, order, "low3", "low");
  // A normal newcomer has nobody below it either.
  const normal3 = track(s, order, "normal3", "normal");
  await flush();
  assertShed(low3.state.error, "queue_full");
  assertShed(normal3.state.error, "queue_full");
  assert.equal(s.queued, 3);

  // A high newcomer now sheds the newest normal.
  const high2 = track(s, order, "high2", "high");
  await flush();
  assertShed(normal2.state.error, "queue_full");
  assert.equal(normal1.state.error, undefined);

  (await drainInOrder({ high1, high2, normal1 }, order, running)).release();
  assert.deepEqual(order, ["high1", "high2", "normal1"]);
  assert.equal(s.inflight, 0);
  assert.equal(s.queued, 0);
});

test("retryAfterS follows the queue length and the recent service time", async () => {
  const { s, time } = setup({ slots: 2, maxQueue: 4 });
  // Teach it a service time of 10 s.
  for (let i = 0; i < 20; i++) {
    const l = await s.acquire("normal");
    time.advance(10_000);
    l.release();
  }
  const held = [await s.acquire("normal"), await s.acquire("normal")];
  const queued = [0, 1, 2, 3].map(() => s.acquire("low").catch(() => undefined));
  const err = await s.acquire("low").catch((e: unknown) => e);
  // 4 waiting over 2 slots at ~10 s each: about 20 s.
  const e = assertShed(err, "queue_full");
  assert.ok(e.retryAfterS! >= 19 && e.retryAfterS! <= 21, `retryAfterS ${e.retryAfterS}`);
  s.drain(new MoltbotError("worker_unavailable", "test over"));
  await Promise.all(queued);
  for (const l of held) l.release();
});

test("a request that waits longer than maxWaitMs is shed with queue_timeout", async () => {
  const { s, time } = setup({ maxWaitMs: 1000 });
  const running = await s.acquire("normal");
  const order: string[] = [];
  const a = track(s, order, "a", "high");
  time.advance(600);
  const b = track(s, order, "b", "low");
  assert.equal(time.pending, 1, "one sweeping timer, not one per request");
  time.advance(399);
  await flush();
  assert.equal(a.state.error, undefined);
  time.advance(1);
  await flush();
  assertShed(a.state.error, "queue_timeout");
  assert.equal(b.state.error, undefined);
  assert.equal(s.queued, 1);
  time.advance(599);
  await flush();
  assert.equal(b.state.error, undefined);
  time.advance(1);
  await flush();
  assertShed(b.state.error, "queue_timeout");
  assert.equal(s.queued, 0);
  assert.equal(time.pending, 0);
  assert.equal(s.inflight, 1, "the running request is untouched");
  running.release();
  assert.equal(s.inflight, 0);
  assert.deepEqual(order, []);
});

test("an admitted request is not shed by its old max-wait timer", async () => {
  const { s, time } = setup({ maxWaitMs: 1000 });
  const running = await s.acquire("normal");
  const order: string[] = [];
  const a = track(s, order, "a", "normal");
  time.advance(500);
  const b = track(s, order, "b", "normal");
  running.release(); // admits a
  time.advance(999); // a's deadline passes (the timer fires early for b and re-arms)
  await flush();
  assert.equal(b.state.error, undefined);
  assert.equal(time.pending, 1);
  time.advance(1);
  await flush();
  assertShed(b.state.error, "queue_timeout");
  assert.deepEqual(order, ["a"]);
  assert.equal(a.state.error, undefined);
  a.state.lease!.release();
  assert.equal(time.pending, 0);
});

test("abort while queued removes the request and leaks no slot or timer", async () => {
  const { s, time } = setup();
  const running = await s.acquire("normal");
  const ac = new AbortController();
  const order: string[] = [];
  const a = track(s, order, "a", "high", ac.signal);
  const b = track(s, order, "b", "low");
  assert.equal(s.queued, 2);
  const reason = new Error("client went away");
  ac.abort(reason);
  await flush();
  assert.equal(a.state.error, reason);
  assert.equal(s.queued, 1);
  running.release();
  await flush();
  assert.deepEqual(order, ["b"]);
  b.state.lease!.release();
  assert.equal(s.inflight, 0);
  assert.equal(s.queued, 0);
  assert.equal(time.pending, 0);

  // An already aborted signal is refused without taking a slot.
  const err = await s.acquire("high", AbortSignal.abort(reason)).catch((e: unknown) => e);
  assert.equal(err, reason);
  assert.equal(s.inflight, 0);

  // Aborting after admission changes nothing: the caller owns the slot until release.
  const ac2 = new AbortController();
  const lease = await s.acquire("normal", ac2.signal);
  ac2.abort();
  assert.equal(s.inflight, 1);
  lease.release();
  assert.equal(s.inflight, 0);

  // Same for one admitted from the queue: its abort listener is gone with it.
  const holder = await s.acquire("normal");
  const ac3 = new AbortController();
  const c = track(s, order, "c", "normal", ac3.signal);
  const d = track(s, order, "d", "low");
  holder.release();
  await c.p;
  ac3.abort(reason);
  await flush();
  assert.equal(c.state.error, undefined);
  assert.equal(s.inflight, 1);
  assert.equal(s.queued, 1, "d is still queued");
  c.state.lease!.release();
  await d.p;
  assert.deepEqual(order, ["b", "c", "d"]);
  d.state.lease!.release();
  assert.equal(s.inflight, 0);
});

test("release is idempotent", async () => {
  const { s } = setup({ slots: 2 });
  const a = await s.acquire("normal");
  const b = await s.acquire("normal");
  a.release();
  a.release();
  a.release();
  assert.equal(s.inflight, 1);
  const order: string[] = [];
  const c = await s.acquire("normal");
  const d = track(s, order, "d", "normal");
  a.release(); // a stale release must not free c's or b's slot
  await flush();
  assert.deepEqual(order, []);
  assert.equal(s.inflight, 2);
  b.release();
  await d.p;
  assert.deepEqual(order, ["d"]);
  c.release();
  d.state.lease!.release();
  assert.equal(s.inflight, 0);
});

test("drain rejects queued requests and later ones, not in-flight leases", async () => {
  const { s, time } = setup({ slots: 2 });
  const a = await s.acquire("normal");
  const b = await s.acquire("high");
  const order: string[] = [];
  const q1 = track(s, order, "q1", "high");
  const q2 = track(s, order, "q2", "low");
  const down = new MoltbotError("worker_unavailable", "worker for m is down");
  s.drain(down);
  await flush();
  assert.equal(q1.state.error, down);
  assert.equal(q2.state.error, down);
  assert.equal(s.queued, 0);
  assert.equal(time.pending, 0);
  assert.equal(s.inflight, 2);
  assert.equal(await s.acquire("high").catch((e: unknown) => e), down);
  a.release();
  b.release();
  assert.equal(s.inflight, 0);
  assert.deepEqual(order, []);

  // The worker is back.
  s.resume();
  const c = await s.acquire("low");
  assert.equal(s.inflight, 1);
  c.release();
});

test("setSlots admits waiters at once when it grows and bounds admission when it shrinks", async () => {
  const { s } = setup({ slots: 1 });
  const a = await s.acquire("normal");
  const order: string[] = [];
  const b = track(s, order, "b", "normal");
  const c = track(s, order, "c", "normal");
  s.setSlots(3);
  assert.equal(s.inflight, 3);
  await Promise.all([b.p, c.p]);
  s.setSlots(1);
  const d = track(s, order, "d", "normal");
  a.release();
  b.state.lease!.release();
  await flush();
  assert.deepEqual(order, ["b", "c"], "two still running with one slot: d waits");
  c.state.lease!.release();
  await d.p;
  assert.deepEqual(order, ["b", "c", "d"]);
  d.state.lease!.release();
  assert.equal(s.inflight, 0);
  assert.throws(() => s.setSlots(0), RangeError);
});
