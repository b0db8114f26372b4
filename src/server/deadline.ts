// The lifetime of one inference request, owned here and nowhere else. It ends early when the
// client leaves (the connection closes before the response is done) or at the request's
// deadline: server.request_timeout_ms, or the shorter `timeout` (seconds) a body asks for.
// Ending it aborts `signal`, which takes a queued request out of the scheduler's queue or
// cancels a running one's sequence in the worker (freeing its slot); the pool still charges
// the tokens that were made.
//
// A server shutting down ends every open lifetime too (endOpenLifetimes), with
// server_shutting_down, so a stream still running at the drain deadline is told why before its
// connection is cut, and its sequence is cancelled.
//
// Hand-written rather than Fastify's handlerTimeout: that one is fixed per route (a body
// cannot shorten it), answers 503, and leaves a hijacked (streamed) reply alone.
import type { Server } from "node:http";
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

// The open lifetimes of each HTTP server, for endOpenLifetimes. Keyed by server: tests run
// several servers in one process.
const open = new WeakMap<Server, Set<RequestLifetime>>();

/**
 * Ends every open request lifetime of `server` with server_shutting_down. Resolves when each
 * of their responses has finished writing (its last event handed to the socket) or its
 * connection is gone, so connections can then be cut without losing that last event.
 */
export function endOpenLifetimes(server: Server, message: string): Promise<void> {
  const lifetimes = [...(open.get(server) ?? [])];
  const err = new MoltbotError("server_shutting_down", message);
  const finished = lifetimes.map((life) => life.endWith(err));
  return Promise.all(finished).then(() => undefined);
}

export class RequestLifetime {
  private readonly abort = new AbortController();
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly server: Server;

  /** `deadlineMs` counts from the request's arrival (its body's upload time included). */
  constructor(private readonly reply: FastifyReply, deadlineMs: number | undefined) {
    reply.raw.on("close", this.onClose);
    this.server = reply.server.server;
    let set = open.get(this.server);
    if (!set) open.set(this.server, (set = new Set()));
    set.add(this);
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

  /** It ended because the client left: nobody is there to be told. */
  get clientLeft(): boolean {
    return this.ended && !(this.abort.signal.reason instanceof MoltbotError);
  }

  /** Why it ended early: the deadline's 504, the shutdown's 503, or the client's departure. */
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
    open.get(this.server)?.delete(this);
  }

  /** Ends it with `err` (unless it has ended); resolves when the response has finished or its connection closed. */
  endWith(err: MoltbotError): Promise<void> {
    const res = this.reply.raw;
    const done = new Promise<void>((resolve) => {
      if (res.writableFinished || res.destroyed) return resolve();
      res.once("finish", () => resolve());
      res.once("close", () => resolve());
    });
    if (!this.ended) this.abort.abort(err);
    return done;
  }

  // 'close' on the response fires on completion too; only an unfinished response means the client left.
  private readonly onClose = (): void => {
    if (!this.reply.raw.writableFinished) this.abort.abort();
  };
}
