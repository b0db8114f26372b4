// The last finished inference requests, for the rolling-window figures of /admin/status
// (requests, errors, completion tokens, latency percentiles over the last N seconds).
//
// Hand-written: the window is chosen per query (1..3600 s) and the percentiles must be those
// of exactly the requests in it. prom-client's Summary keeps a fixed window of approximate
// quantiles, and a histogram only gives bucket bounds. A ring of parallel typed arrays costs
// no allocation per request; a query walks back from the newest record until the window's
// start and sorts those latencies (milliseconds at the rates this server serves).

export interface WindowFigures {
  requests: number;
  errors: number;
  completion_tokens: number;
  /** null when no request finished in the window. */
  latency_ms: { p50: number | null; p95: number | null };
}

/** Records kept: past this many the oldest are overwritten, so a window covers at most this many requests. */
export const DEFAULT_CAPACITY = 65_536;

export class RecentRequests {
  private readonly at: Float64Array;
  private readonly latencyMs: Float64Array;
  private readonly completion: Uint32Array;
  private readonly model: Uint16Array;
  private readonly error: Uint8Array;
  private next = 0;
  private size = 0;

  /** `now`: monotonic milliseconds. */
  constructor(
    private readonly capacity = DEFAULT_CAPACITY,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.at = new Float64Array(capacity);
    this.latencyMs = new Float64Array(capacity);
    this.completion = new Uint32Array(capacity);
    this.model = new Uint16Array(capacity);
    this.error = new Uint8Array(capacity);
  }

  /** A finished request of model number `model` (an index the caller keeps). */
  add(model: number, latencyMs: number, completionTokens: number, error: boolean): void {
    const i = this.next;
    this.at[i] = this.now();
    this.latencyMs[i] = latencyMs;
    this.completion[i] = completionTokens;
    this.model[i] = model;
    this.error[i] = error ? 1 : 0;
    this.next = i + 1 === this.capacity ? 0 : i + 1;
    if (this.size < this.capacity) this.size++;
  }

  /** Figures per model number (0..models-1) over the requests that finished in the last `windowS` seconds. */
  window(windowS: number, models: number): WindowFigures[] {
    const since = this.now() - windowS * 1000;
    const requests = new Array<number>(models).fill(0);
    const errors = new Array<number>(models).fill(0);
    const tokens = new Array<number>(models).fill(0);
    // Newest first until the window's start: count, then copy each model's latencies into a
    // typed array (whose sort is numeric and several times faster than an array's).
    let inWindow = 0;
    for (let i = this.next; inWindow < this.size; inWindow++) {
      i = i === 0 ? this.capacity - 1 : i - 1;
      if (this.at[i]! < since) break;
      const m = this.model[i]!;
      if (m >= models) continue;
      requests[m]!++;
      errors[m]! += this.error[i]!;
      tokens[m]! += this.completion[i]!;
    }
    const latencies = requests.map((n) => new Float64Array(n));
    const filled = new Array<number>(models).fill(0);
    for (let k = 0, i = this.next; k < inWindow; k++) {
      i = i === 0 ? this.capacity - 1 : i - 1;
      const m = this.model[i]!;
      if (m < models) latencies[m]![filled[m]!++] = this.latencyMs[i]!;
    }
    return latencies.map((l, m) => {
      l.sort();
      return { requests: requests[m]!, errors: errors[m]!, completion_tokens: tokens[m]!, latency_ms: { p50: percentile(l, 0.5), p95: percentile(l, 0.95) } };
    });
  }
}

/** Linear interpolation between the closest ranks (numpy's default) of sorted values, to 0.1 ms; null when empty. */
export function percentile(sorted: ArrayLike<number>, q: number): number | null {
  if (sorted.length === 0) return null;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  const v = sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
  return Math.round(v * 10) / 10;
}
