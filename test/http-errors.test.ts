// One error shape everywhere, and the listener's socket limits: refusals from Fastify's router
// and from Node's HTTP parser (404, 408, 413, 414, 431, malformed requests) come back as
// OpenAI's {error: {message, type, param, code}} without echoing a huge URL or header; a body
// or headers trickled in (slowloris) are cut at their timeouts; validation messages name the
// real failure.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import OpenAI, { APIError } from "openai";
import { makeRepository, startServer, type RunningServer } from "./helpers/fixtures.js";

const BODY_TIMEOUT_MS = 800;
const HEADERS_TIMEOUT_MS = 400;
const KEEP_ALIVE_TIMEOUT_MS = 600;

let srv: RunningServer;
let client: OpenAI;
let port: number;

before(async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0" }]);
  srv = await startServer(repo, { bodyLimit: "4KiB", config: { server: { body_timeout_ms: BODY_TIMEOUT_MS, headers_timeout_ms: HEADERS_TIMEOUT_MS, keep_alive_timeout_ms: KEEP_ALIVE_TIMEOUT_MS } } });
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
  port = srv.server.address.port;
});
after(async () => srv?.close());

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

function assertOpenAIShape(body: unknown, status: number, code: string): ErrorBody["error"] {
  const e = (body as ErrorBody).error;
  assert.ok(e, `an error object: ${JSON.stringify(body)}`);
  assert.deepEqual(Object.keys(e).sort(), ["code", "message", "param", "type"]);
  assert.equal(e.code, code);
  assert.equal(e.type, status >= 500 ? "server_error" : "invalid_request_error");
  assert.ok(e.message.length < 300, `a short message: ${e.message.length} characters`);
  return e;
}

interface RawResponse {
  status: number;
  headers: string;
  body: unknown;
  /** ms from the first byte sent to the server closing the connection. */
  closedAfterMs: number;
}

/**
 * Sends `head` on a raw socket, then `trickle` one byte at a time every `everyMs` (what a
 * slowloris client does), and reads until the server closes the connection.
 */
function rawExchange(head: string, trickle = "", everyMs = 100): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1");
    const started = performance.now();
    let received = "";
    let timer: NodeJS.Timeout | undefined;
    socket.setEncoding("utf8");
    socket.on("connect", () => {
      socket.write(head);
      let i = 0;
      if (trickle) {
        timer = setInterval(() => {
          if (i < trickle.length && socket.writable) socket.write(trickle[i++]!);
        }, everyMs);
      }
    });
    socket.on("data", (d: string) => (received += d));
    socket.on("error", () => {}); // a reset after the response is the server closing
    // A server that never cuts the client off fails the test instead of hanging it.
    const guard = setTimeout(() => {
      socket.destroy();
      reject(new Error("the server kept the connection open"));
    }, 10_000);
    socket.on("close", () => {
      clearInterval(timer);
      clearTimeout(guard);
      const at = received.indexOf("\r\n\r\n");
      if (at < 0) return reject(new Error(`no HTTP response before close: ${JSON.stringify(received.slice(0, 200))}`));
      const headers = received.slice(0, at);
      try {
        const rest = received.slice(at + 4);
        const length = Number(/content-length: *(\d+)/i.exec(headers)?.[1] ?? rest.length);
        resolve({ status: Number(headers.split(" ")[1]), headers, body: JSON.parse(rest.slice(0, length)), closedAfterMs: performance.now() - started });
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

describe("slowloris", () => {
  test("a body trickled in is cut after server.body_timeout_ms with 408 in OpenAI's shape", async () => {
    const body = JSON.stringify({ model: "tiny", prompt: "hello there", max_tokens: 1 });
    const r = await rawExchange(`POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n`, body, 100);
    assert.equal(r.status, 408);
    const e = assertOpenAIShape(r.body, 408, "body_timeout");
    assert.match(e.message, /body was not received within 800 ms/);
    assert.match(r.headers, /connection: close/i);
    assert.ok(r.closedAfterMs >= BODY_TIMEOUT_MS - 50 && r.closedAfterMs < BODY_TIMEOUT_MS + 1500, `closed after ${r.closedAfterMs.toFixed(0)} ms`);
  });

  test("headers trickled in are cut after server.headers_timeout_ms", async () => {
    const r = await rawExchange("GET /v1/models HTTP/1.1\r\n", "x-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 50);
    assert.equal(r.status, 408);
    const e = assertOpenAIShape(r.body, 408, "body_timeout");
    assert.match(e.message, /headers were not received within 400 ms/);
    assert.ok(r.closedAfterMs >= HEADERS_TIMEOUT_MS - 50 && r.closedAfterMs < BODY_TIMEOUT_MS, `closed after ${r.closedAfterMs.toFixed(0)} ms, before the body timeout`);
  });

  test("a connection that sends nothing is closed after server.headers_timeout_ms", async () => {
    const r = await rawExchange("");
    assert.equal(r.status, 408);
    assertOpenAIShape(r.body, 408, "body_timeout");
    assert.ok(r.closedAfterMs >= HEADERS_TIMEOUT_MS - 50 && r.closedAfterMs < BODY_TIMEOUT_MS, `closed after ${r.closedAfterMs.toFixed(0)} ms`);
  });

  test("an idle keep-alive connection is closed after server.keep_alive_timeout_ms", async () => {
    const r = await rawExchange("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    // Node holds the socket about a second past the timeout it advertises, so a client never races it.
    assert.equal(r.status, 200);
    assert.ok(r.closedAfterMs >= KEEP_ALIVE_TIMEOUT_MS - 50 && r.closedAfterMs < KEEP_ALIVE_TIMEOUT_MS + 1500, `closed after ${r.closedAfterMs.toFixed(0)} ms`);
  });
});

describe("Node's and Fastify's refusals in OpenAI's shape", () => {
  test("431: headers larger than Node accepts; the header is not echoed", async () => {
    const huge = "h".repeat(20_000);
    const r = await rawExchange(`GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: ${huge}\r\n\r\n`);
    assert.equal(r.status, 431);
    const e = assertOpenAIShape(r.body, 431, "headers_too_large");
    assert.ok(!e.message.includes("hhhh"));
  });

  test("414: a URL over 8 KiB; the URL is not echoed", async () => {
    const res = await fetch(`${srv.url}/v1/${"u".repeat(9000)}`);
    assert.equal(res.status, 414);
    const e = assertOpenAIShape(await res.json(), 414, "uri_too_long");
    assert.ok(!e.message.includes("uuuu"));
  });

  test("414: a path segment over Fastify's parameter limit", async () => {
    const res = await fetch(`${srv.url}/v1/models/${"m".repeat(200)}`);
    assert.equal(res.status, 414);
    const e = assertOpenAIShape(await res.json(), 414, "uri_too_long");
    assert.ok(!e.message.includes("mmmm"));
  });

  test("400: a path that is not valid percent-encoding", async () => {
    const r = await rawExchange("GET /v1/models/%zz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert.equal(r.status, 400);
    assertOpenAIShape(r.body, 400, "invalid_request");
  });

  test("400: a malformed request line, answered by Node's parser", async () => {
    const r = await rawExchange("NOT A REQUEST\r\n\r\n");
    assert.equal(r.status, 400);
    assertOpenAIShape(r.body, 400, "invalid_request");
  });

  test("404: an unknown route; a long URL is shortened in the message", async () => {
    const res = await fetch(`${srv.url}/v2/${"p".repeat(2000)}`);
    assert.equal(res.status, 404);
    const e = assertOpenAIShape(await res.json(), 404, "route_not_found");
    assert.match(e.message, /\(2004 characters\)/);
  });

  test("413: a body over server.body_limit, by Content-Length and when streamed without one", async () => {
    const big = JSON.stringify({ model: "tiny", prompt: "x".repeat(10_000) });
    const res = await fetch(`${srv.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: big });
    assert.equal(res.status, 413);
    assertOpenAIShape(await res.json(), 413, "payload_too_large");
    const chunked = await fetch(`${srv.url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: new ReadableStream({
        start(c) {
          for (let i = 0; i < 10; i++) c.enqueue(new TextEncoder().encode(big.slice(i * 1000, (i + 1) * 1000)));
          c.close();
        },
      }),
      duplex: "half",
    } as RequestInit);
    assert.equal(chunked.status, 413);
    assertOpenAIShape(await chunked.json(), 413, "payload_too_large");
  });
});

describe("validation messages name the real failure", () => {
  async function refusal(p: Promise<unknown>): Promise<APIError> {
    try {
      await p;
    } catch (err) {
      assert.ok(err instanceof APIError, String(err));
      assert.equal(err.status, 400);
      return err;
    }
    assert.fail("the request was accepted");
  }

  test("a stop list of 100 items is refused for its length, not its type", async () => {
    const stop = Array.from({ length: 100 }, (_, i) => `s${i}`);
    const err = await refusal(client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], stop }));
    assert.equal(err.code, "invalid_request");
    assert.equal(err.param, "stop");
    assert.match(err.message, /'stop' must have at most 16 items/);
  });

  test("an image_url content part is refused as unsupported, naming the part", async () => {
    const err = await refusal(
      client.chat.completions.create({
        model: "tiny",
        messages: [{ role: "user", content: [{ type: "text", text: "what is this?" }, { type: "image_url", image_url: { url: "https://example.com/cat.png" } }] }],
      }),
    );
    assert.equal(err.code, "unsupported_parameter");
    assert.equal(err.param, "messages[0].content[1].type");
    assert.match(err.message, /'image_url' content parts are not supported/);
  });

  test("a text part without text names the missing field", async () => {
    const err = await refusal(client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: [{ type: "text" } as never] }] }));
    assert.equal(err.param, "messages[0].content[0].text");
    assert.match(err.message, /is required/);
  });

  test("a value that fits none of a union's types lists them; a bad enum lists its values", async () => {
    const stop = await refusal(client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], stop: 5 as never }));
    assert.match(stop.message, /'stop' must be string, array or null/);
    const role = await refusal(client.chat.completions.create({ model: "tiny", messages: [{ role: "robot" as never, content: "hi" }] }));
    assert.equal(role.param, "messages[0].role");
    assert.match(role.message, /must be one of "system", "developer", "user", "assistant", "tool"/);
    const item = await refusal(client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], stop: ["a", 5 as never] }));
    assert.equal(item.param, "stop[1]");
  });

  test("text content parts still work", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: [{ type: "text", text: "hello" }] }], max_tokens: 2 });
    assert.equal(r.choices[0]!.message.role, "assistant");
  });
});
