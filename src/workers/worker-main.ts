// Entry of a model worker process: loads one model version and serves generate/embed
// requests from the main process over the IPC channel. It exits when the parent goes away,
// so a killed server never leaves orphaned workers holding memory.
import { MoltbotError } from "../errors.js";
import { loadEngine } from "../engine/load-engine.js";
import type { Engine } from "../engine/types.js";
import type { MainToWorker, WorkerInit, WorkerToMain } from "./protocol.js";
import { promptTokens, runGeneration } from "./generation.js";

// Outgoing messages wait in an outbox and leave as one IPC write per turn of the event loop.
// The engine runs a decode step, calls back once per sequence, then yields with setImmediate;
// the flush, queued during the step, runs before the next step, so every sequence's delta of
// a step (and the "done" that follows it) costs one write here and one wake-up and parse in
// the main process instead of one each. Any other message leaves at once, with the outbox
// ahead of it: "prepared" and "failed" answer a request the main process waits on, and
// "started" opens the client's stream before the prompt is evaluated; a flush queued behind
// a running engine's next step would hold them for a whole step. Order is kept: the outbox
// is the only way out.
let outbox: WorkerToMain[] = [];
let flushQueued = false;

function send(msg: WorkerToMain): void {
  outbox.push(msg);
  if (msg.type !== "text" && msg.type !== "done") {
    flush();
  } else if (!flushQueued) {
    flushQueued = true;
    setImmediate(flush);
  }
}

function flush(): void {
  flushQueued = false; // a flush already queued finds the outbox empty, or newer deltas
  const msgs = outbox;
  if (msgs.length === 0) return;
  outbox = [];
  if (process.connected) process.send!(msgs.length === 1 ? msgs[0]! : ({ type: "batch", msgs } satisfies WorkerToMain));
}

/** Closes the channel once everything sent so far is written. */
function disconnect(): void {
  flush();
  process.disconnect?.();
}

function errorFields(err: unknown): { code: MoltbotError["code"]; message: string } {
  if (err instanceof MoltbotError) return { code: err.code, message: err.message };
  return { code: "engine_error", message: err instanceof Error ? err.message : String(err) };
}

async function main(): Promise<void> {
  // Checked against WorkerInitSchema by the main process before it spawns this one
  // (model-worker.ts): loading TypeBox here cost the worker's start, and with it the server's
  // time to ready, ~170 ms (docs/benchmarks.md).
  const raw: unknown = JSON.parse(process.env.MOLTBOT_WORKER_INIT ?? "null");
  if (typeof raw !== "object" || raw === null) {
    send({ type: "fatal", code: "internal_error", message: "worker started without MOLTBOT_WORKER_INIT" });
    process.exit(2);
  }
  const init = raw as WorkerInit;
  const started = performance.now();
  let engine: Engine;
  try {
    engine = await loadEngine(init.engine, {
      modelPath: init.modelPath,
      contextSize: init.contextSize,
      parallel: init.parallel,
      threads: init.threads,
      embedding: init.embedding,
      speculative: init.speculative,
      promptCacheBytes: init.promptCacheBytes,
      ...(init.kvCacheTokens === undefined ? {} : { kvCacheTokens: init.kvCacheTokens }),
    });
  } catch (err) {
    const f = errorFields(err);
    send({ type: "fatal", code: f.code === "engine_error" ? "repository_invalid" : f.code, message: `${init.modelPath}: ${f.message}` });
    process.exitCode = 1;
    disconnect();
    return;
  }

  const inflight = new Map<number, AbortController>();
  const prepared = new Map<number, number[]>();
  let shuttingDown = false;

  const finishShutdown = async () => {
    if (inflight.size > 0) return;
    await engine.close();
    disconnect();
    process.exit(0);
  };

  process.on("message", (msg: MainToWorker) => {
    switch (msg.type) {
      case "prepare": {
        try {
          const tokens = promptTokens(engine, msg.prompt);
          prepared.set(msg.id, tokens);
          send({ type: "prepared", id: msg.id, promptTokens: tokens.length });
        } catch (err) {
          send({ type: "failed", id: msg.id, ...errorFields(err) });
        }
        break;
      }
      case "discard":
        prepared.delete(msg.id);
        break;
      case "generate": {
        const ac = new AbortController();
        inflight.set(msg.id, ac);
        let tokens: number[] | undefined;
        try {
          tokens = msg.prompt ? promptTokens(engine, msg.prompt) : prepared.get(msg.id);
          if (!tokens) throw new MoltbotError("internal_error", `no prepared prompt ${msg.id}`);
        } catch (err) {
          send({ type: "failed", id: msg.id, ...errorFields(err) });
          inflight.delete(msg.id);
          break;
        } finally {
          prepared.delete(msg.id);
        }
        runGeneration(engine, msg.id, tokens, msg.params, ac.signal, send)
          .catch((err: unknown) => {
            if (!ac.signal.aborted) send({ type: "failed", id: msg.id, ...errorFields(err) });
          })
          .finally(() => {
            inflight.delete(msg.id);
            if (shuttingDown) void finishShutdown();
          });
        break;
      }
      case "embed": {
        const id = msg.id;
        inflight.set(id, new AbortController());
        (async () => {
          const tokens = msg.inputs.map((t) => engine.tokenize(t, true));
          const ctx = engine.info.contextSize;
          const tooLong = tokens.findIndex((t) => t.length > ctx);
          if (tooLong !== -1) {
            throw new MoltbotError("context_length_exceeded", `input[${tooLong}] is ${tokens[tooLong]!.length} tokens but the model's context is ${ctx}`, { param: "input" });
          }
          const data = await engine.embed(tokens);
          send({ type: "embedded", id, data, tokens: tokens.map((t) => t.length) });
        })()
          .catch((err: unknown) => send({ type: "failed", id, ...errorFields(err) }))
          .finally(() => {
            inflight.delete(id);
            if (shuttingDown) void finishShutdown();
          });
        break;
      }
      case "cancel":
        inflight.get(msg.id)?.abort();
        break;
      case "ping":
        send({ type: "pong" });
        break;
      case "shutdown":
        shuttingDown = true;
        void finishShutdown();
        break;
    }
  });
  // Ctrl+C and systemd's stop signal reach the whole process group; the parent drains us
  // over IPC instead, so in-flight requests finish before the worker goes.
  process.on("SIGINT", () => {});
  process.on("SIGTERM", () => {});
  // A log-rotation SIGUSR1 sent to the whole group (systemctl kill) would otherwise start
  // Node's inspector here; the worker has no log file of its own.
  process.on("SIGUSR1", () => {});
  // The parent died or closed the channel: nothing can reach a client any more.
  process.on("disconnect", () => process.exit(0));
  send({ type: "ready", info: engine.info, loadMs: Math.round(performance.now() - started) });
}

void main();
