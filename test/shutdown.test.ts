// Shutdown of a server with requests still running at its drain deadline: a stream is ended
// with an error event naming the shutdown and [DONE] (not a bare EOF), a whole request gets
// 503 server_shutting_down, each is logged, and their sequences are cancelled. Also: a streamed
// request sent with `Connection: close` has its socket closed right after [DONE].
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { makeRepository, startServer, type RunningServer, until } from "./helpers/fixtures.js";
import type { PoolEntry } from "../src/pool/model-pool.js";

// Far more tokens than the tiny model makes before any deadline below (about 1000 tokens/s here).
const LONG = { max_tokens: 6000, ignore_eos: true, temperature: 0 };

let srv: RunningServer;
let entry: PoolEntry;
let closed = false;

before(async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0", parallel: 2, contextSize: 8192 }]);
  srv = await startServer(repo);
  entry = srv.server.models.entries[0]!;
});
after(async () => {
  if (!closed) await srv?.close();
});


interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body as received so far. */
  body: string;
  /** Resolves at the end of the body (EOF or a clean end). */
  ended: Promise<void>;
  /** Resolves when the TCP connection closes. */
  socketClosed: Promise<void>;
}

/** POSTs JSON (by default on a fresh connection, which node's client asks to close) and exposes the raw bytes, so a bare EOF cannot hide behind a client library. */
function post(path: string, body: unknown, headers: Record<string, string> = {}, agent: http.Agent | false = false): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${srv.url}${path}`, { method: "POST", agent, headers: { "content-type": "application/json", ...headers } });
    let socketClosed!: Promise<void>;
    req.on("socket", (s) => {
      socketClosed = new Promise((r) => s.once("close", () => r()));
    });
    req.on("error", reject);
    req.on("response", (res) => {
      const out: RawResponse = {
        status: res.statusCode ?? 0,
        headers: res.headers,
        body: "",
        ended: new Promise((r) => {
          res.on("end", () => r());
          res.on("close", () => r());
          res.on("error", () => r());
        }),
        socketClosed,
      };
      res.setEncoding("utf8");
      res.on("data", (d: string) => (out.body += d));
      resolve(out);
    });
    req.end(JSON.stringify(body));
  });
}

const events = (body: string) => body.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));

test("a streamed request sent with Connection: close gets its socket closed right after [DONE]", async () => {
  const res = await post("/v1/completions", { model: "tiny", prompt: "Once upon a time", max_tokens: 5, stream: true }, { connection: "close" });
  assert.equal(res.status, 200);
  assert.equal(res.headers.connection, "close", "the stream honours the client's Connection: close");
  const t0 = performance.now();
  await res.ended;
  await res.socketClosed;
  assert.ok(performance.now() - t0 < 2000, "socket closed at once, not at the keep-alive timeout");
  assert.equal(events(res.body).at(-1), "[DONE]");

  // A client that keeps connections alive still gets that.
  const agent = new http.Agent({ keepAlive: true });
  const kept = await post("/v1/completions", { model: "tiny", prompt: "Once upon a time", max_tokens: 5, stream: true }, {}, agent);
  assert.equal(kept.headers.connection, "keep-alive");
  await kept.ended;
  agent.destroy();
});

test("at the drain deadline a long stream ends with an error event naming the shutdown and [DONE], and a whole request gets 503", async () => {
  const stream = await post("/v1/completions", { model: "tiny", prompt: "Once upon a time", ...LONG, stream: true }, { "x-request-id": "cut-stream-1" });
  assert.equal(stream.status, 200);
  const whole = post("/v1/chat/completions", { model: "tiny", messages: [{ role: "user", content: "hi" }], ...LONG }, { "x-request-id": "cut-whole-1" });
  await until("both requests generating, tokens streamed", () => entry.served.worker.inflight === 2 && events(stream.body).length > 3);

  const t0 = performance.now();
  const drainMs = 1500;
  const closing = srv.server.close(drainMs);
  await stream.ended;
  const all = events(stream.body);
  assert.equal(all.at(-1), "[DONE]", "the stream ends with [DONE], not a bare EOF");
  const last = JSON.parse(all.at(-2)!) as { error?: { code: string; type: string; message: string } };
  assert.equal(last.error?.code, "server_shutting_down");
  assert.equal(last.error?.type, "server_error");
  assert.match(last.error!.message, /shutting down/);

  const w = await whole;
  await w.ended;
  assert.equal(w.status, 503);
  assert.equal((JSON.parse(w.body) as { error: { code: string } }).error.code, "server_shutting_down");
  await until("the worker's sequences to be cancelled", () => entry.served.worker.inflight === 0, 2000);

  await closing;
  closed = true;
  const took = performance.now() - t0;
  assert.ok(took < drainMs + 1500, `shutdown took ${took.toFixed(0)} ms`);

  const lines = srv.lines();
  srv.log.close();
  const cutLog = lines.filter((l) => l.includes("server_shutting_down") && l.includes("cut-stream-1"));
  assert.ok(cutLog.some((l) => /Stream of POST \/v1\/completions failed \(503\)/.test(l)), `the cut stream is logged:\n${lines.join("\n")}`);
  assert.ok(lines.some((l) => /POST \/v1\/completions 200 /.test(l) && l.includes("cut-stream-1")), "the cut stream has its access log line");
  assert.ok(lines.some((l) => /POST \/v1\/chat\/completions 503 /.test(l) && l.includes("cut-whole-1")), "the cut whole request has its access log line");
});
