// Entry of a model worker process: loads one model version and serves generate/embed
// requests from the main process over the IPC channel. It exits when the parent goes away,
// so a killed server never leaves orphaned workers holding memory.
import { MoltbotError } from "../errors.js";
import { loadEngine } from "../engine/load-engine.js";
import type { Engine } from "../engine/types.js";
import type { MainToWorker, WorkerInit, WorkerToMain } from "./protocol.js";
import { promptTokens, runGeneration, workerParams } from "./generation.js";
import { ToolTemplate } from "../engine/chat-template.js";

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

type Handlers = { [K in MainToWorker["type"]]: (msg: Extract<MainToWorker, { type: K }>) => void };

/** The loaded worker: its state in one place and one handler per message type. */
class WorkerHost {
  /** Generations and embeddings running, by request id. */
  private readonly inflight = new Map<number, AbortController>();
  /** Prompts tokenized by "prepare", waiting for their "generate" or "discard". */
  private readonly prepared = new Map<number, number[]>();
  private shuttingDown = false;

  constructor(
    private readonly engine: Engine,
    /** The model's own chat template for prompts with tools, when it has a tool section. */
    private readonly tools: ToolTemplate | undefined,
  ) {}

  handle(msg: MainToWorker): void {
    // The mapped type makes the table exhaustive; the cast only says each key holds its own type.
    (this.handlers[msg.type] as (m: MainToWorker) => void)(msg);
  }

  private readonly handlers: Handlers = {
    prepare: (msg) => {
      try {
        const tokens = promptTokens(this.engine, msg.prompt, this.tools);
        this.prepared.set(msg.id, tokens);
        send({ type: "prepared", id: msg.id, promptTokens: tokens.length });
      } catch (err) {
        send({ type: "failed", id: msg.id, ...errorFields(err) });
      }
    },
    discard: (msg) => {
      this.prepared.delete(msg.id);
    },
    generate: (msg) => {
      let tokens: number[] | undefined;
      try {
        tokens = msg.prompt ? promptTokens(this.engine, msg.prompt, this.tools) : this.prepared.get(msg.id);
        if (!tokens) throw new MoltbotError("internal_error", `no prepared prompt ${msg.id}`);
      } catch (err) {
        send({ type: "failed", id: msg.id, ...errorFields(err) });
        return;
      } finally {
        this.prepared.delete(msg.id);
      }
      const ac = new AbortController();
      this.run(msg.id, ac, runGeneration(this.engine, msg.id, tokens, workerParams(msg.params, this.tools), ac.signal, send).catch((err: unknown) => {
        if (!ac.signal.aborted) send({ type: "failed", id: msg.id, ...errorFields(err) });
      }));
    },
    embed: (msg) => {
      const id = msg.id;
      const embed = async () => {
        const tokens = msg.inputs.map((t) => this.engine.tokenize(t, true));
        const ctx = this.engine.info.contextSize;
        const tooLong = tokens.findIndex((t) => t.length > ctx);
        if (tooLong !== -1) {
          throw new MoltbotError("context_length_exceeded", `input[${tooLong}] is ${tokens[tooLong]!.length} tokens but the model's context is ${ctx}`, { param: "input" });
        }
        const data = await this.engine.embed(tokens);
        send({ type: "embedded", id, data, tokens: tokens.map((t) => t.length) });
      };
      this.run(id, new AbortController(), embed().catch((err: unknown) => send({ type: "failed", id, ...errorFields(err) })));
    },
    cancel: (msg) => {
      this.inflight.get(msg.id)?.abort();
    },
    ping: () => send({ type: "pong" }),
    load: () => undefined, // handled before the model loads (placed())
    shutdown: () => {
      this.shuttingDown = true;
      void this.finishShutdown();
    },
  };

  /** Tracks a running request until `work` settles (it never rejects); the last one to end completes a shutdown. */
  private run(id: number, ac: AbortController, work: Promise<void>): void {
    this.inflight.set(id, ac);
    void work.finally(() => {
      this.inflight.delete(id);
      if (this.shuttingDown) void this.finishShutdown();
    });
  }

  private async finishShutdown(): Promise<void> {
    if (this.inflight.size > 0) return;
    await this.engine.close();
    disconnect();
    process.exit(0);
  }
}

/** Resolves at the parent's "load": by then this process is in its cgroups. */
function placed(): Promise<void> {
  process.once("disconnect", () => process.exit(0));
  return new Promise((resolve) => {
    const onMessage = (msg: MainToWorker) => {
      if (msg.type !== "load") return;
      process.off("message", onMessage);
      resolve();
    };
    process.on("message", onMessage);
  });
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
  if (init.awaitPlacement === true) await placed();
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
      placement: init.placement,
    });
  } catch (err) {
    const f = errorFields(err);
    send({ type: "fatal", code: f.code === "engine_error" ? "repository_invalid" : f.code, message: f.code === "backend_unavailable" || f.code === "library_invalid" ? f.message : `${init.modelPath}: ${f.message}` });
    process.exitCode = 1;
    disconnect();
    return;
  }

  const tools = init.embedding ? undefined : await ToolTemplate.of(engine.chatTemplateSource());
  const host = new WorkerHost(engine, tools);
  process.on("message", (msg: MainToWorker) => host.handle(msg));
  // Ctrl+C and systemd's stop signal reach the whole process group; the parent drains us
  // over IPC instead, so in-flight requests finish before the worker goes.
  process.on("SIGINT", () => {});
  process.on("SIGTERM", () => {});
  // A log-rotation SIGUSR1 sent to the whole group (systemctl kill) would otherwise start
  // Node's inspector here; the worker has no log file of its own.
  process.on("SIGUSR1", () => {});
  // The parent died or closed the channel: nothing can reach a client any more.
  process.on("disconnect", () => process.exit(0));
  const info = tools === undefined ? engine.info : { ...engine.info, toolCallSyntax: tools.syntax };
  send({ type: "ready", info, loadMs: Math.round(performance.now() - started) });
}

void main();
