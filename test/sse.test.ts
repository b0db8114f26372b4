import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { once } from "node:events";
import { SseStream } from "../src/server/sse.js";

// A real HTTP server and a client that does not read until every event was sent: the socket
// fills, and the events behind it must arrive complete, in order, in fewer writes than events.
test("events for a client that falls behind are coalesced, complete and in order", async () => {
  const EVENTS = 200;
  const payload = "x".repeat(32 * 1024); // enough to fill the loopback socket's buffers
  let writes = 0;
  let sent!: () => void;
  const allSent = new Promise<void>((r) => (sent = r));
  const server = http.createServer((_req, res) => {
    const write = res.write.bind(res) as (chunk: string) => boolean;
    (res as { write: (chunk: string) => boolean }).write = (chunk: string) => {
      writes++;
      return write(chunk);
    };
    const sse = new SseStream(res, {});
    for (let i = 0; i < EVENTS; i++) sse.send({ i, payload });
    sse.end();
    sent();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const { port } = server.address() as AddressInfo;
    const req = http.get({ host: "127.0.0.1", port, path: "/" });
    const [res] = (await once(req, "response")) as [http.IncomingMessage];
    assert.equal(res.headers["content-type"], "text/event-stream; charset=utf-8");
    res.pause();
    await allSent;
    res.setEncoding("utf8");
    let body = "";
    res.on("data", (d: string) => (body += d));
    res.resume();
    await once(res, "end");
    const events = body.split("\n\n").filter(Boolean);
    assert.equal(events.at(-1), "data: [DONE]");
    const ids = events.slice(0, -1).map((e) => (JSON.parse(e.slice("data: ".length)) as { i: number }).i);
    assert.deepEqual(ids, Array.from({ length: EVENTS }, (_, i) => i));
    assert.ok(writes < EVENTS / 2, `${writes} writes for ${EVENTS} events`);
  } finally {
    server.close();
  }
});

test("a client that keeps up gets one write per event", async () => {
  let writes = 0;
  const server = http.createServer((_req, res) => {
    const write = res.write.bind(res) as (chunk: string) => boolean;
    (res as { write: (chunk: string) => boolean }).write = (chunk: string) => {
      writes++;
      return write(chunk);
    };
    const sse = new SseStream(res, { "x-request-id": "7" });
    sse.send({ a: 1 });
    sse.send({ b: 2 });
    sse.end();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const { port } = server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(res.headers.get("x-request-id"), "7");
    assert.equal(await res.text(), 'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n');
    assert.equal(writes, 2);
  } finally {
    server.close();
  }
});

// A header value node refuses (it throws in writeHead) leaves the stream unopened, so the
// caller can still answer with an error status rather than leave the client hanging.
test("headers that cannot be written leave the stream unopened, free for an error reply", async () => {
  let threw: unknown;
  const server = http.createServer((_req, res) => {
    const sse = new SseStream(res, { "x-moltbot-fallback": "overloaded (bad\r\nname)" });
    try {
      sse.send({ a: 1 });
    } catch (err) {
      threw = err;
    }
    assert.equal(sse.started, false);
    res.writeHead(500, { "content-type": "application/json" });
    res.end('{"error":{"code":"internal_error"}}');
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  try {
    const { port } = server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(res.status, 500);
    assert.equal(res.headers.get("x-moltbot-fallback"), null);
    assert.equal(await res.text(), '{"error":{"code":"internal_error"}}');
    assert.match(String(threw), /Invalid character in header content/);
  } finally {
    server.close();
  }
});
