// Single-flight: identical requests in flight at once run the model once. The first one starts
// a Flight; later ones join it. The generation belongs to the flight, not to any one client: it
// is admitted and runs under the flight's own signal, aborted only when every participant has
// left, so a leader whose client disconnects does not fail the others. A participant that joins
// late first gets what was generated so far as one delta, then the rest as it comes.
import type { GenerationDone, GenerationSink } from "../workers/model-worker.js";
import type { TokenLogprobEntry } from "../workers/protocol.js";

/** What a generation's admission says before it runs (the pool's GenerationAdmission, narrowed). */
export interface FlightAdmission<E> {
  entry: E;
  version: string;
  fallbacks: string[];
  run(sink: GenerationSink, signal: AbortSignal): Promise<GenerationDone>;
}

/** A participant's view: the admission's facts, and a run that follows the flight's output. */
export type Participation<E> = FlightAdmission<E>;

export interface FlightResult<E> {
  admission: FlightAdmission<E>;
  text: string;
  deltas: Array<[string, number, number]>;
  logprobs: TokenLogprobEntry[] | undefined;
  done: GenerationDone;
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => (signal.removeEventListener("abort", onAbort), resolve(v)),
      (e: unknown) => (signal.removeEventListener("abort", onAbort), reject(e)),
    );
  });
}

export class Flight<E> {
  private readonly controller = new AbortController();
  private participants = 0;
  private promptTokens: number | undefined;
  private text = "";
  private readonly deltas: Array<[string, number, number]> = [];
  private readonly logprobs: TokenLogprobEntry[] | undefined;
  private generated = 0;
  private readonly sinks = new Set<GenerationSink>();
  private settled = false;
  readonly admitted: Promise<FlightAdmission<E>>;
  readonly result: Promise<FlightResult<E>>;

  constructor(admit: (signal: AbortSignal) => Promise<FlightAdmission<E>>, wantLogprobs: boolean) {
    this.logprobs = wantLogprobs ? [] : undefined;
    const sink: GenerationSink = {
      onStart: (n) => {
        this.promptTokens = n;
        for (const s of this.sinks) s.onStart?.(n);
      },
      onText: (delta, lp, n) => {
        this.text += delta;
        this.deltas.push([delta, n, lp?.length ?? 0]);
        this.generated = n;
        if (this.logprobs && lp) this.logprobs.push(...lp);
        for (const s of this.sinks) s.onText(delta, lp, n);
      },
    };
    this.admitted = admit(this.controller.signal);
    this.result = this.admitted.then(async (a) => ({ admission: a, done: await a.run(sink, this.controller.signal), text: this.text, deltas: this.deltas, logprobs: this.logprobs }));
    const end = () => {
      this.settled = true;
    };
    this.result.then(end, end);
    // Participants see the failure through their own awaits; this one is only bookkeeping.
    this.admitted.catch(() => undefined);
    this.result.catch(() => undefined);
  }

  /** How many requests wait on this flight now. */
  get size(): number {
    return this.participants;
  }

  /**
   * Join the flight: resolves once it is admitted with this participant's admission. `signal`
   * is the participant's own lifetime; when it aborts the participant leaves, and the last to
   * leave aborts the generation.
   */
  async join(signal: AbortSignal): Promise<Participation<E>> {
    this.participants++;
    let left = false;
    const leave = () => {
      if (left) return;
      left = true;
      signal.removeEventListener("abort", leave);
      if (--this.participants === 0 && !this.settled) this.controller.abort(signal.reason);
    };
    signal.addEventListener("abort", leave, { once: true });
    let a: FlightAdmission<E>;
    try {
      a = await abortable(this.admitted, signal);
    } catch (err) {
      leave();
      throw err;
    }
    return {
      entry: a.entry,
      version: a.version,
      fallbacks: a.fallbacks,
      run: async (sink, runSignal) => {
        // Catch up: what came before this participant joined, as one delta.
        if (this.promptTokens !== undefined) sink.onStart?.(this.promptTokens);
        if (this.text !== "") sink.onText(this.text, this.logprobs?.slice(), this.generated);
        this.sinks.add(sink);
        try {
          return (await abortable(this.result, runSignal)).done;
        } finally {
          this.sinks.delete(sink);
          leave();
        }
      },
    };
  }
}
