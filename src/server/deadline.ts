// The lifetime of one inference request, owned here and nowhere else. It ends early when the
// client leaves (the connection closes before the response is done) or at the request's
// deadline: server.request_timeout_ms, or the shorter `timeout` (seconds) a body asks for.
// Ending it aborts `signal`, which takes a queued request out of the scheduler's queue or
// cancels a running one's sequence in the worker (freeing its slot); the pool still charges
// the tokens that were made.
//
// Hand-written rather than Fastify's handlerTimeout: that one is fixed per route (a body
// cannot shorten it), answers 503, and leaves a hijacked (streamed) reply alone.
import type { FastifyReply } from "fastify";
import { MoltbotError } from "../errors.js";

// Node turns a delay above 2^31-1 ms into 1 ms.
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The deadline of a request in ms: the configured one, shortened by the body's `timeout` (seconds). */
export function requestDeadlineMs(configuredMs: number | undefined, bodyTimeoutS: number | null | undefined): number | undefined {
  if (bodyTimeoutS === undefined || bodyTimeoutS === null) return configuredMs;
  const askedMs = Math.max(1, Math.ceil(bodyTimeoutS * 1000));
  return configuredMs === undefined ? askedMs : Math.min(askedMs, configuredMs);
}

export class RequestLifetime {
  private readonly abort = new AbortController();
  private readonly timer: NodeJS.Timeout | undefined;

  /** `deadlineMs` counts from the request's arrival (its body's upload time included). */
  constructor(private readonly reply: FastifyReply, deadlineMs: number | undefined) {
    reply.raw.on("close", this.onClose);
    if (deadlineMs !== undefined) {
      const leftMs = Math.min(MAX_TIMER_MS, Math.max(0, deadlineMs - reply.elapsedTime));
      const err = new MoltbotError("request_timeout", `the request did not finish within its deadline of ${deadlineMs} ms; the tokens made so far are charged`);
      this.timer = setTimeout(() => this.abort.abort(err), leftMs);
    }
  }

  /** Aborted when the request ends early, for any reason. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  get ended(): boolean {
    return this.abort.signal.aborted;
  }

  /** The deadline passed (rather than the client leaving): the client is still there to be told. */
  get timedOut(): boolean {
    const r: unknown = this.abort.signal.reason;
    return r instanceof MoltbotError && r.code === "request_timeout";
  }

  /** Why it ended early: the deadline's 504, or the client's departure. */
  get reason(): MoltbotError {
    const r: unknown = this.abort.signal.reason;
    return r instanceof MoltbotError ? r : new MoltbotError("invalid_request", "client closed the connection");
  }

  /** Resolves never; rejects with `reason` when the lifetime ends early. For racing work that cannot be cancelled. */
  whenEnded(): Promise<never> {
    return new Promise((_, reject) => {
      if (this.ended) reject(this.reason);
      else this.abort.signal.addEventListener("abort", () => reject(this.reason), { once: true });
    });
  }

  /** The response is done: stop watching. */
  close(): void {
    clearTimeout(this.timer);
    this.reply.raw.off("close", this.onClose);
  }

  // 'close' on the response fires on completion too; only an unfinished response means the client left.
  private readonly onClose = (): void => {
    if (!this.reply.raw.writableFinished) this.abort.abort();
  };
}
