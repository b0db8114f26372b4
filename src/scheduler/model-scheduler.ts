// The admission gate in front of one model's worker: at most `slots` requests run in the
// worker at once (its engine decodes that many sequences together), the rest wait in a
// bounded queue ordered by ./priority.ts. Several pool entries with different priorities may
// share one scheduler.
//
// Ownership rule: once `acquire` resolves, the caller owns one slot and must call
// `lease.release()` exactly once, in a finally block, whatever happens to the request (extra
// calls are ignored). If `acquire` rejects, the caller owns nothing.
//
// Overload: when the queue is full, the newest request of the lowest base priority below the
// newcomer's is shed (429 queue_full) to make room; if there is none, the newcomer is refused.
// A request that waits longer than `maxWaitMs` is shed with 429 queue_timeout. Aging changes
// the order of admission, not who is shed: an aged low request is still low when making room,
// so a flood of low traffic can never push high requests out.
import { MoltbotError } from "../errors.js";
import { DEFAULT_AGING_MS, admissionKey, baseRank, compareAdmission, type Priority } from "./priority.js";

export interface SlotLease {
  /** Frees the slot and admits the next queued request synchronously. Idempotent. */
  release(): void;
}

/** The subset of the timer API the scheduler uses; tests pass fakes. */
export interface SchedulerTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface ModelSchedulerOptions {
  /** Requests admitted into the worker at once (the engine's parallel sequences). */
  slots: number;
  /** Requests that may wait; 0 means none wait. */
  maxQueue: number;
  /** Longest wait before a request is shed with queue_timeout; Infinity disables it. */
  maxWaitMs: number;
  /** Waiting time that lifts a request by one priority level. */
  agingMs?: number;
  /** Milliseconds, monotonic. */
  clock?: () => number;
  timers?: SchedulerTimers;
  /** Names the model in error messages. */
  name?: string;
}

interface Waiter {
  readonly priority: Priority;
  readonly key: number;
  readonly seq: number;
  readonly enqueuedAt: number;
  readonly resolve: (lease: SlotLease) => void;
  readonly reject: (err: unknown) => void;
  readonly signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  prev: Waiter | undefined;
  next: Waiter | undefined;
}

/** FIFO with O(1) removal from the middle (abort, shedding the newest). */
class WaitList {
  head: Waiter | undefined;
  tail: Waiter | undefined;
  size = 0;

  push(w: Waiter): void {
    w.prev = this.tail;
    w.next = undefined;
    if (this.tail) this.tail.next = w;
    else this.head = w;
    this.tail = w;
    this.size++;
  }

  remove(w: Waiter): void {
    if (w.prev) w.prev.next = w.next;
    else this.head = w.next;
    if (w.next) w.next.prev = w.prev;
    else this.tail = w.prev;
    w.prev = w.next = undefined;
    this.size--;
  }
}

// Node turns a delay above 2^31-1 ms into 1 ms; never ask for more.
const MAX_TIMER_MS = 2 ** 31 - 1;
// Weight of the newest sample in the mean service time behind Retry-After.
const SERVICE_EWMA_ALPHA = 0.2;
// Assumed service time until the first lease is released.
const INITIAL_SERVICE_MS = 1000;

const defaultTimers: SchedulerTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export class ModelScheduler {
  private slots: number;
  private readonly maxQueue: number;
  /** Longest wait for a slot (queue.max_wait_ms); Infinity: unbounded. */
  readonly maxWaitMs: number;
  private readonly agingMs: number;
  private readonly clock: () => number;
  private readonly timers: SchedulerTimers;
  private readonly name: string;
  // One FIFO per priority, indexed by baseRank; see priority.ts for why heads suffice.
  private readonly lists: readonly [WaitList, WaitList, WaitList] = [new WaitList(), new WaitList(), new WaitList()];
  private inflightCount = 0;
  private queuedCount = 0;
  private seq = 0;
  private drainedWith: MoltbotError | undefined;
  // One sweeping timer for max wait, armed for the oldest waiter while anyone waits.
  private sweepHandle: unknown;
  private sweepArmed = false;
  private meanServiceMs = INITIAL_SERVICE_MS;

  constructor(opts: ModelSchedulerOptions) {
    checkSlots(opts.slots);
    if (!Number.isInteger(opts.maxQueue) || opts.maxQueue < 0) throw new RangeError(`maxQueue must be an integer >= 0, got ${opts.maxQueue}`);
    if (!(opts.maxWaitMs > 0)) throw new RangeError(`maxWaitMs must be > 0, got ${opts.maxWaitMs}`);
    const agingMs = opts.agingMs ?? DEFAULT_AGING_MS;
    if (!(agingMs > 0) || !Number.isFinite(agingMs)) throw new RangeError(`agingMs must be a finite number > 0, got ${agingMs}`);
    this.slots = opts.slots;
    this.maxQueue = opts.maxQueue;
    this.maxWaitMs = opts.maxWaitMs;
    this.agingMs = agingMs;
    this.clock = opts.clock ?? (() => performance.now());
    this.timers = opts.timers ?? defaultTimers;
    this.name = opts.name ?? "model";
  }

  get inflight(): number {
    return this.inflightCount;
  }

  get queued(): number {
    return this.queuedCount;
  }

  /** Slots: requests that may run in the worker at once. */
  get capacity(): number {
    return this.slots;
  }

  queuedByPriority(): Record<Priority, number> {
    return { high: this.lists[0].size, normal: this.lists[1].size, low: this.lists[2].size };
  }

  /**
   * Resolves with a lease when the request may run. Rejects with MoltbotError
   * ("queue_full" | "queue_timeout", with retryAfterS) when shed, with the drain error after
   * `drain`, or with the signal's reason if aborted while queued (removing it from the queue).
   */
  acquire(priority: Priority, signal?: AbortSignal): Promise<SlotLease> {
    if (this.drainedWith) return Promise.reject(this.drainedWith);
    if (signal?.aborted) return Promise.reject(signal.reason);
    // Hot path. Invariant: after every state change the queue is empty or all slots are taken,
    // so a free slot means nobody is waiting ahead of this request.
    if (this.inflightCount < this.slots) return Promise.resolve(this.grantSlot());
    return this.enqueue(priority, signal);
  }

  /** Change the number of slots (e.g. a restarted worker with another `parallel`); admits at once if it grew. */
  setSlots(n: number): void {
    checkSlots(n);
    this.slots = n;
    this.pump();
  }

  /**
   * Stop admitting: every queued request and every later `acquire` is rejected with `err`
   * (e.g. worker_unavailable, so the caller may fall back). In-flight leases stay valid.
   * `resume` admits again.
   */
  drain(err: MoltbotError): void {
    this.drainedWith = err;
    for (const list of this.lists) {
      while (list.head) this.dequeue(list.head).reject(err);
    }
    this.disarmSweep();
  }

  /** Undo `drain` (the worker is back). */
  resume(): void {
    this.drainedWith = undefined;
    this.pump();
  }

  private grantSlot(): SlotLease {
    this.inflightCount++;
    const admittedAt = this.clock();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        this.inflightCount--;
        const took = this.clock() - admittedAt;
        this.meanServiceMs += SERVICE_EWMA_ALPHA * (took - this.meanServiceMs);
        this.pump();
      },
    };
  }

  private enqueue(priority: Priority, signal: AbortSignal | undefined): Promise<SlotLease> {
    const rank = baseRank(priority);
    if (this.queuedCount >= this.maxQueue) {
      const victim = this.newestBelow(rank);
      const err = this.shedError("queue_full", `queue for ${this.name} is full (${this.maxQueue} waiting)`);
      if (!victim) return Promise.reject(err);
      this.dequeue(victim).reject(err);
    }
    const now = this.clock();
    return new Promise<SlotLease>((resolve, reject) => {
      const w: Waiter = {
        priority,
        key: admissionKey(priority, now, this.agingMs),
        seq: this.seq++,
        enqueuedAt: now,
        resolve,
        reject,
        signal,
        onAbort: undefined,
        prev: undefined,
        next: undefined,
      };
      if (signal) {
        w.onAbort = () => {
          this.dequeue(w);
          this.settleSweep();
          reject(signal.reason);
        };
        signal.addEventListener("abort", w.onAbort, { once: true });
      }
      this.lists[rank]!.push(w);
      this.queuedCount++;
      if (!this.sweepArmed) this.armSweep();
    });
  }

  /** Admit waiters while slots are free. */
  private pump(): void {
    if (this.drainedWith) return;
    let admitted = false;
    while (this.inflightCount < this.slots) {
      const next = this.first();
      if (!next) break;
      this.dequeue(next).resolve(this.grantSlot());
      admitted = true;
    }
    if (admitted) this.settleSweep();
  }

  /** The waiter to admit next: the best of the three heads. */
  private first(): Waiter | undefined {
    let best: Waiter | undefined;
    for (const list of this.lists) {
      const h = list.head;
      if (h && (!best || compareAdmission(h, best) < 0)) best = h;
    }
    return best;
  }

  /** The newest waiter of the lowest base priority worse than `rank`, if any. */
  private newestBelow(rank: number): Waiter | undefined {
    for (let r = this.lists.length - 1; r > rank; r--) {
      const tail = this.lists[r]!.tail;
      if (tail) return tail;
    }
    return undefined;
  }

  /** Unlink `w` from the queue and its signal; the caller settles its promise. */
  private dequeue(w: Waiter): Waiter {
    this.lists[baseRank(w.priority)]!.remove(w);
    this.queuedCount--;
    if (w.onAbort) {
      w.signal!.removeEventListener("abort", w.onAbort);
      w.onAbort = undefined;
    }
    return w;
  }

  private shedError(code: "queue_full" | "queue_timeout", message: string): MoltbotError {
    // Time for the slots to work through the queue at the recent service rate.
    const retryAfterS = Math.max(1, Math.ceil(((this.queuedCount / this.slots) * this.meanServiceMs) / 1000));
    return new MoltbotError(code, message, { retryAfterS });
  }

  // --- max wait -----------------------------------------------------------------------------
  // The oldest waiter is always one of the three heads (each list is in arrival order), so
  // one timer armed for its deadline covers everyone. A timer left armed after that waiter is
  // admitted fires early, finds nothing expired and re-arms: cheaper than re-arming on every
  // admission.

  private oldestEnqueuedAt(): number | undefined {
    let oldest: number | undefined;
    for (const list of this.lists) {
      const h = list.head;
      if (h && (oldest === undefined || h.enqueuedAt < oldest)) oldest = h.enqueuedAt;
    }
    return oldest;
  }

  private armSweep(): void {
    const oldest = this.oldestEnqueuedAt();
    if (oldest === undefined || !Number.isFinite(this.maxWaitMs)) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, oldest + this.maxWaitMs - this.clock()));
    this.sweepArmed = true;
    this.sweepHandle = this.timers.setTimeout(() => this.sweep(), delay);
  }

  private disarmSweep(): void {
    if (!this.sweepArmed) return;
    this.timers.clearTimeout(this.sweepHandle);
    this.sweepArmed = false;
    this.sweepHandle = undefined;
  }

  /** After waiters left: no timer may outlive the queue. */
  private settleSweep(): void {
    if (this.queuedCount === 0) this.disarmSweep();
  }

  private sweep(): void {
    this.sweepArmed = false;
    this.sweepHandle = undefined;
    const now = this.clock();
    for (;;) {
      let expired: Waiter | undefined;
      for (const list of this.lists) {
        const h = list.head;
        if (h && now - h.enqueuedAt >= this.maxWaitMs && (!expired || h.enqueuedAt < expired.enqueuedAt)) expired = h;
      }
      if (!expired) break;
      this.dequeue(expired);
      const err = this.shedError("queue_timeout", `request waited more than ${this.maxWaitMs} ms in the queue for ${this.name}`);
      expired.reject(err);
    }
    this.armSweep();
  }
}

function checkSlots(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`slots must be an integer >= 1, got ${n}`);
}
