// Server-sent events for streamed completions. Headers go out with the first event, so a
// failure before any token (unknown model, worker down) still gets a proper status code.
import type { ServerResponse } from "node:http";

export class SseStream {
  private opened = false;

  constructor(private readonly res: ServerResponse, private readonly headers: Record<string, string>) {}

  get started(): boolean {
    return this.opened;
  }

  get closed(): boolean {
    return this.res.destroyed || this.res.writableEnded;
  }

  private open(): void {
    if (this.opened) return;
    this.opened = true;
    this.res.writeHead(200, {
      ...this.headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
  }

  send(data: unknown): void {
    this.open();
    if (!this.closed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  end(): void {
    this.open();
    if (!this.closed) this.res.end("data: [DONE]\n\n");
  }
}
