// Socket-level limits of the HTTP listener: how long a client may take to send headers and a
// body (slowloris), how long an idle keep-alive connection lives, how long a URL may be, and
// the answer Node's HTTP parser gives on its own (`clientError`: 408, 431, 400) before Fastify
// ever sees a request, in OpenAI's error shape like every other error.
//
// Node enforces the header and request timeouts itself (server.headersTimeout/requestTimeout,
// checked every connectionsCheckingInterval); Fastify turns requestTimeout off by default, so
// a body trickled in a byte at a time held a socket for as long as the client liked.
import type { Duplex } from "node:stream";
import { STATUS_CODES, type Server, type ServerResponse } from "node:http";
import type { FastifyServerOptions } from "fastify";
import { MoltbotError } from "../errors.js";
import type { Logger } from "../observe/logger.js";
import { errorReply } from "./errors-http.js";

export interface HttpTimeouts {
  /** Whole request (headers and body) received within this, else 408. */
  bodyTimeoutMs: number;
  /** Headers received within this (<= bodyTimeoutMs, as Node requires). */
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

/** Longest request target we read; beyond it 414 (nginx and Apache stop near 8 KiB too). */
export const MAX_URL_LENGTH = 8192;

// Node checks the two timeouts on an interval (default 30 s, which would let a 30 s limit run
// to a minute); a quarter of the shorter limit, at most a second, keeps the overshoot small
// while the check itself only walks connections that are still receiving a request.
function checkingIntervalMs(t: HttpTimeouts): number {
  return Math.max(50, Math.min(1000, Math.floor(Math.min(t.headersTimeoutMs, t.bodyTimeoutMs) / 4)));
}

/** Fastify constructor options for the listener's limits and its client-error answer. */
export function httpLimitOptions(t: HttpTimeouts, log: Logger): Partial<FastifyServerOptions> {
  return {
    requestTimeout: t.bodyTimeoutMs,
    keepAliveTimeout: t.keepAliveTimeoutMs,
    // No idle-socket timeout: a long non-streamed generation keeps its socket silent for as
    // long as it runs; the request deadline (server.request_timeout_ms) bounds that instead.
    connectionTimeout: 0,
    clientErrorHandler: clientErrorHandler(t, log.child("api")),
  };
}

/** What Fastify does not expose: the headers timeout and how often Node checks both. Before listen. */
export function applyNodeTimeouts(server: Server, t: HttpTimeouts): void {
  server.headersTimeout = Math.min(t.headersTimeoutMs, t.bodyTimeoutMs);
  // Read by Node when the server starts listening (absent from @types/node's Server).
  (server as Server & { connectionsCheckingInterval: number }).connectionsCheckingInterval = checkingIntervalMs(t);
}

function clientErrorOf(err: NodeJS.ErrnoException, t: HttpTimeouts, headersReceived: boolean): MoltbotError {
  switch (err.code) {
    case "ERR_HTTP_REQUEST_TIMEOUT":
      // Node reports both timeouts alike; a response object exists once the headers are in.
      return headersReceived
        ? new MoltbotError("body_timeout", `the request body was not received within ${t.bodyTimeoutMs} ms (server.body_timeout_ms)`)
        : new MoltbotError("body_timeout", `the request headers were not received within ${Math.min(t.headersTimeoutMs, t.bodyTimeoutMs)} ms (server.headers_timeout_ms)`);
    case "HPE_HEADER_OVERFLOW":
      return new MoltbotError("headers_too_large", "the request line and headers are larger than the server accepts (16 KiB)");
    case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
      return new MoltbotError("payload_too_large", "chunk extensions are larger than the server accepts");
    default:
      return new MoltbotError("invalid_request", "malformed HTTP request");
  }
}

// Fastify's own handler answers in its shape ({error, message, statusCode}); this one writes
// the same minimal response Node would, with our body, then closes the connection.
function clientErrorHandler(t: HttpTimeouts, log: Logger) {
  return (err: NodeJS.ErrnoException, socket: Duplex): void => {
    if (err.code === "ECONNRESET" || socket.destroyed) return;
    const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
    const error = clientErrorOf(err, t, inFlight != null);
    log.warning(`Client error ${error.status} ${error.code}: ${err.code ?? err.message}`);
    // A response already under way cannot take another status line: only close.
    if (!socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const { status, body } = errorReply(error);
    const json = JSON.stringify(body);
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(json)}\r\nconnection: close\r\n\r\n${json}`,
      () => socket.destroy(),
    );
  };
}
