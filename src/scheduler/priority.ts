// Admission order for one model's queue: higher priority first, with aging so that low
// priority is never starved forever, ties first-come first-served. Plain functions, so the
// scheduler holds no policy of its own and tests can check the policy without a scheduler.
//
// Aging is continuous: a request's effective rank improves by one priority level per
// `agingMs` of waiting (rank = base - waited / agingMs; lower rank goes first). Comparing two
// waiting requests at any instant `now` gives
//   base_a - (now - t_a)/agingMs  <  base_b - (now - t_b)/agingMs
//   <=>  t_a + base_a*agingMs  <  t_b + base_b*agingMs
// so the order never changes while they wait: each request gets a fixed admission key at
// enqueue time, and within one priority that key grows with arrival time. The scheduler
// relies on this: it keeps one FIFO per priority and compares only the three heads.

export type Priority = "high" | "normal" | "low";

/** Every priority, best first. */
export const PRIORITIES: readonly Priority[] = ["high", "normal", "low"];

/** Default time for a waiting request to climb one priority level. */
export const DEFAULT_AGING_MS = 5000;

const BASE_RANK: Readonly<Record<Priority, number>> = { high: 0, normal: 1, low: 2 };

/** 0 for high, 1 for normal, 2 for low: lower is served first. */
export function baseRank(priority: Priority): number {
  return BASE_RANK[priority];
}

/** The rank a request has after waiting `waitedMs` (may go below 0: an old low request outranks a fresh high one). */
export function effectiveRank(priority: Priority, waitedMs: number, agingMs: number): number {
  return BASE_RANK[priority] - waitedMs / agingMs;
}

/** A fixed key, taken at enqueue, that orders waiting requests exactly as `effectiveRank` does at any later instant. */
export function admissionKey(priority: Priority, enqueuedAtMs: number, agingMs: number): number {
  return enqueuedAtMs + BASE_RANK[priority] * agingMs;
}

export interface WaitingRequest {
  /** From `admissionKey`. */
  readonly key: number;
  /** Arrival order, strictly increasing; breaks ties FIFO. */
  readonly seq: number;
}

/** Negative when `a` is admitted before `b`. */
export function compareAdmission(a: WaitingRequest, b: WaitingRequest): number {
  return a.key !== b.key ? a.key - b.key : a.seq - b.seq;
}
