// Server-sent events for streamed completions. Headers go out with the first event, so a
// failure before any token (unknown model, worker down) still gets a proper status code.
import type { ServerResponse } from "node:http";

/**
 * Named events (`event: <name>` before each `data:`), as the Responses API streams them; a
 * formatter returns one of these where chat and completions return a bare payload.
 */
export class SseEvents {
  constructor(readonly events: ReadonlyArray<{ event: string; data: unknown }>) {}
}

export class SseStream {
  private opened = false;
  /** Events held while the socket is full; written as one chunk on 'drain'. */
  private backlog = "";
  private waitingDrain = false;
  private endAfterDrain = false;

  constructor(private readonly res: ServerResponse, private readonly headers: Record<string, string>) {}

  get started(): boolean {
    return this.opened;
  }

  get closed(): boolean {
    return this.res.destroyed || this.res.writableEnded;
  }

  // No `connection` header: node keeps the connection alive unless the client sent
  // `Connection: close` (then it closes the socket after [DONE]); forcing keep-alive held it open.
  private open(): void {
    if (this.opened) return;
    // `opened` only once writeHead succeeded: when it throws (a header value node refuses), the
    // caller can still answer with an error status instead of events on a response never begun.
    this.res.writeHead(200, {
      ...this.headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    });
    this.opened = true;
  }

  send(data: unknown): void {
    this.open();
    if (data instanceof SseEvents) this.write(data.events.map((e) => `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`).join(""));
    else this.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  /** `doneMarker`: end with OpenAI's `data: [DONE]` (chat, completions); the Responses API sends none. */
  end(doneMarker = true): void {
    this.open();
    if (this.closed) return;
    const last = doneMarker ? "data: [DONE]\n\n" : "";
    if (this.waitingDrain) {
      this.backlog += last;
      this.endAfterDrain = true;
    } else {
      this.res.end(last);
    }
  }

  // A client reading slower than tokens come gets them coalesced: once a write is refused
  // (the socket's buffer is full) later events wait in one string and go out as one chunk
  // on 'drain', instead of one buffered chunk (and chunk header) per token. No cork here:
  // node's http already corks a chunked response until the next tick, so events written in
  // the same tick (the final chunk, the usage chunk and [DONE]) share one writev.
  private write(event: string): void {
    if (this.closed) return;
    if (this.waitingDrain) {
      this.backlog += event;
      return;
    }
    if (!this.res.write(event)) {
      this.waitingDrain = true;
      this.res.once("drain", this.onDrain);
    }
  }

  private readonly onDrain = (): void => {
    this.waitingDrain = false;
    const chunk = this.backlog;
    this.backlog = "";
    if (this.closed) return;
    if (this.endAfterDrain) {
      this.res.end(chunk);
    } else if (chunk.length > 0) {
      this.write(chunk);
    }
  };
}
