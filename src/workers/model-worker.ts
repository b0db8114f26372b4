// Supervises the worker process of one model version. Its lifecycle (spawning, loading,
// ready, unhealthy, crashed, restarting, draining, stopped, failed) and the legal transitions
// are drawn in worker-state.ts; `setState` is the one place the state changes.
//
// In-flight requests of a worker that dies end at once with `worker_crashed` (503); the
// worker is restarted with exponential backoff and the rest of the server keeps serving.
// A worker that is alive but stuck (stopped, deadlocked in native code) would hold its
// requests forever while looking ready, so a ready worker is pinged and one that sends
// nothing at all for the heartbeat timeout is killed, which takes the crash path above.
// The first load failing is fatal (a bad model is the operator's to fix, not to retry).
//
// A worker with resource limits runs in its own cgroups (`confinement`, workers/cgroups/):
// each process is moved there before it loads the model. One killed by its memory limit (the
// group's OOM-kill count went up) is reported as such and restarted with backoff like any
// crash, also during its first load; MAX_OOM_KILLS kills in a row mark it failed instead of
// looping.
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { Value } from "@sinclair/typebox/value";
import { MoltbotError, type ErrorCode } from "../errors.js";
import { describePlacement } from "../engine/placement.js";
import type { EngineModelInfo } from "../engine/types.js";
import type { Logger } from "../observe/logger.js";
import { readProcStats } from "../observe/proc-stats.js";
import type { GenerationParams } from "../engine/types.js";
import { WorkerInitSchema, type FinishReason, type MainToWorker, type PromptInput, type TokenLogprobEntry, type WorkerInit, type WorkerToMain } from "./protocol.js";
import { canTransition, isFinal, isLive, type WorkerState } from "./worker-state.js";
import type { CgroupUsage, LimitStatus } from "./cgroups/manager.js";

export type { WorkerState } from "./worker-state.js";

/** Called after each change of state; `from` is the state left. */
export type WorkerStateListener = (to: WorkerState, from: WorkerState) => void;

export interface GenerationSink {
  onStart?(promptTokens: number): void;
  /** `generated`: completion tokens so far (a delta may span several when text was held back). */
  onText(text: string, logprobs: TokenLogprobEntry[] | undefined, generated: number): void;
}

/** One vector and one token count per input. */
export interface EmbedResult {
  data: number[][];
  tokens: number[];
}

/** A prompt tokenized in the worker and kept there until generated or discarded. */
export interface PreparedPrompt {
  readonly id: number;
  readonly promptTokens: number;
  /** The worker process that holds the tokens; a restarted worker does not. */
  readonly incarnation: number;
}

export interface GenerationDone {
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens served from the KV prefix cache. */
  cachedTokens: number;
}

export interface RestartPolicy {
  initialMs: number;
  maxMs: number;
  /** A worker that stayed up this long resets the backoff. */
  stableMs: number;
}

export interface HeartbeatPolicy {
  /** How often a ready worker is pinged. */
  intervalMs: number;
  /**
   * A ready worker that sends nothing (any message counts) for this long is killed. Generous:
   * the engine blocks the worker's thread for a whole decode step or prompt chunk (~0.5 s on
   * a small CPU), and a long chunk on a big model can take several seconds.
   */
  timeoutMs: number;
}

export const DEFAULT_HEARTBEAT: HeartbeatPolicy = { intervalMs: 1000, timeoutMs: 10_000 };

/** The cgroups a worker's processes run in (WorkerCgroup in workers/cgroups/manager.ts). */
export interface WorkerConfinement {
  /** Each configured limit, enforced or not (status, metrics). */
  readonly limits: readonly LimitStatus[];
  /** What the group has used (status, metrics). */
  usage(): CgroupUsage;
  /** Moves a new process in; returns a warning per limit that could not be applied to it. */
  place(pid: number): string[];
  /** Processes of the group killed by its memory limit so far; null when unknown. */
  oomKills(): number | null;
  /** The memory limit as configured ("4GiB"), when one is enforced. */
  readonly memoryLimit: string | undefined;
  /** Removes the groups once the worker is stopped for good. */
  release(): void;
}

/** Memory-limit kills in a row (without a stable run between) after which the worker is failed. */
export const MAX_OOM_KILLS = 3;

/** A request sent to the worker, by kind: what answers it and what it resolves with. */
type Pending =
  | { kind: "prepare"; resolve(value: PreparedPrompt): void; reject(err: Error): void; requestId?: undefined }
  | {
      kind: "generate";
      resolve(value: GenerationDone): void;
      reject(err: Error): void;
      sink: GenerationSink;
      /** The HTTP request's id, for the log. */
      requestId: string | undefined;
    }
  | { kind: "embed"; resolve(value: EmbedResult): void; reject(err: Error): void; requestId?: undefined };

const WORKER_ENTRY = fileURLToPath(new URL("./worker-main.js", import.meta.url));

export class ModelWorker {
  private current: WorkerState = "spawning";
  private readonly listeners = new Set<WorkerStateListener>();
  /** What a request gets while draining: the caller of close() says whether it is worth retrying elsewhere. */
  private refusal: ErrorCode = "server_shutting_down";
  private closing: Promise<void> | undefined;
  info: EngineModelInfo | undefined;
  restarts = 0;
  /** Counts spawns: prepared prompts live in one process only. */
  private incarnation = 0;
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private backoffMs: number;
  private readyAt = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  /** performance.now() of the last message from the current child (monotonic: a wall-clock step must not kill a worker). */
  private lastHeard = 0;
  /** The promise of start() until the first load ends; after it, an exit is a crash. */
  private firstStart: { resolve(): void; reject(err: Error): void } | undefined;
  private drained: (() => void) | undefined;
  private readonly embedQueue: Array<{ inputs: string[]; resolve(r: EmbedResult): void; reject(err: Error): void }> = [];
  private embedRunning = false;
  /** Embedding evaluations sent to the worker (fewer than embed() calls when grouped). */
  embedBatches = 0;
  /** Kills by the memory limit in a row; 0 after a run of stableMs. */
  oomKillsInRow = 0;
  /** The group's OOM-kill count when the current process started. */
  private oomBaseline: number | null = null;
  private spawnedAt = 0;
  /** Why the worker is failed, when it was given up after running (requests are told). */
  private failure: string | undefined;

  constructor(
    readonly init: WorkerInit,
    private readonly log: Logger,
    private readonly policy: RestartPolicy = { initialMs: 250, maxMs: 10_000, stableMs: 30_000 },
    private readonly clock: () => number = Date.now,
    private readonly heartbeat: HeartbeatPolicy = DEFAULT_HEARTBEAT,
    readonly confinement?: WorkerConfinement,
  ) {
    // Here rather than in the worker, where loading TypeBox would slow every start (worker-main.ts).
    const invalid = Value.Errors(WorkerInitSchema, init).First();
    if (invalid !== undefined) throw new MoltbotError("internal_error", `worker init of ${init.name}: ${invalid.path || "(top level)"}: ${invalid.message}`);
    this.backoffMs = policy.initialMs;
  }

  get state(): WorkerState {
    return this.current;
  }

  /**
   * The one place the state changes: refuses a transition worker-state.ts does not allow (a
   * bug: logged, then thrown) and tells the listeners, in order. A listener that throws is
   * logged and does not stop the others or the worker.
   */
  private setState(to: WorkerState, why: string): void {
    const from = this.current;
    if (!canTransition(from, to)) {
      const msg = `worker of ${this.label}: illegal state transition ${from} → ${to} (${why})`;
      this.log.error(msg);
      throw new MoltbotError("internal_error", msg);
    }
    this.current = to;
    this.log.debug(`Worker of ${this.label}: ${from} → ${to} (${why})`);
    if (to === "stopped") this.confinement?.release();
    if (to === "draining" || to === "stopped") this.settleFirstStart(new MoltbotError("worker_unavailable", `${this.label} was closed while loading`));
    for (const listener of [...this.listeners]) {
      try {
        listener(to, from);
      } catch (err) {
        this.log.error(`A state listener of ${this.label} threw on ${from} → ${to}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  /** Calls `listener` after every change of state; returns the function that unsubscribes it. */
  onStateChange(listener: WorkerStateListener): () => void {
    const entry: WorkerStateListener = (to, from) => listener(to, from); // the same function may subscribe twice
    this.listeners.add(entry);
    return () => void this.listeners.delete(entry);
  }

  /**
   * Resolves at once when ready, else the next time the worker becomes ready (after a load or
   * a restart). Rejects with `worker_unavailable` when it is or becomes draining, stopped or
   * failed, or `timeoutMs` passes first, and with `signal.reason` when `signal` aborts.
   */
  whenReady(signal?: AbortSignal, timeoutMs?: number): Promise<void> {
    if (this.current === "ready") return Promise.resolve();
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (isFinal(this.current)) return Promise.reject(new MoltbotError("worker_unavailable", `${this.label} is ${this.current}`));
    return new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (err?: unknown) => {
        unsubscribe();
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (err === undefined) resolve();
        else reject(err);
      };
      const onAbort = () => finish(signal!.reason);
      const unsubscribe = this.onStateChange((to) => {
        if (to === "ready") finish();
        else if (isFinal(to)) finish(new MoltbotError("worker_unavailable", `${this.label} is ${to}`));
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => finish(new MoltbotError("worker_unavailable", `${this.label} was not ready within ${timeoutMs} ms (it is ${this.current})`)), timeoutMs);
      }
    });
  }

  /** The state now: listeners run inside setState and may have changed it (close()). */
  private still(state: WorkerState): boolean {
    return this.current === state;
  }

  private settleFirstStart(err?: Error): void {
    const first = this.firstStart;
    this.firstStart = undefined;
    if (err) first?.reject(err);
    else first?.resolve();
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get inflight(): number {
    return this.pending.size;
  }

  isReady(): boolean {
    return this.current === "ready";
  }

  /** Spawns the worker and resolves once the model is loaded; rejects if it cannot load or is closed first. */
  start(): Promise<void> {
    if (this.incarnation > 0 || this.current !== "spawning") return Promise.reject(new MoltbotError("internal_error", `${this.label}: start() called twice or after close()`));
    return new Promise((resolve, reject) => {
      this.firstStart = { resolve, reject };
      this.spawn();
    });
  }

  private spawn(): void {
    if (this.current !== "spawning") this.setState("spawning", "restart");
    this.incarnation++;
    this.spawnedAt = this.clock();
    const confinement = this.confinement;
    const child = fork(WORKER_ENTRY, [], {
      // JSON beats structured clone for small per-token messages (bench/ipc.ts: ~9 vs ~15 us end to end).
      serialization: "json",
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      env: { ...process.env, MOLTBOT_WORKER_INIT: JSON.stringify(confinement ? { ...this.init, awaitPlacement: true } : this.init) },
    });
    this.child = child;
    child.on("message", (msg: WorkerToMain) => this.receive(msg));
    child.on("spawn", () => {
      if (confinement && child.pid !== undefined) {
        // Into its cgroups before it loads anything: the worker waits for "load".
        this.oomBaseline = confinement.oomKills();
        for (const warning of confinement.place(child.pid)) this.log.child("worker").warning(warning);
        child.send({ type: "load" } satisfies MainToWorker);
      }
      if (child === this.child && this.current === "spawning") this.setState("loading", `pid ${child.pid}`);
    });
    child.on("exit", (code, signal) => this.onExit(child, code, signal));
    child.on("error", (err) => {
      this.log.error(`worker for ${this.label} failed: ${err.message}`);
      // A process that could not be created emits no 'exit' to count on.
      if (child.pid === undefined) this.onExit(child, null, null, err.message);
    });
    this.lastHeard = performance.now();
    let lastTick = this.lastHeard;
    let cpuBefore: number | null = null;
    const timer = setInterval(() => {
      const now = performance.now();
      // This process was itself blocked (the tick is late): the worker's answers may be
      // waiting unread in the channel, so it is not judged on this tick.
      const late = now - lastTick > this.heartbeat.intervalMs + this.heartbeat.timeoutMs / 2;
      lastTick = now;
      if (child !== this.child || !child.connected) return clearInterval(timer);
      if (this.current !== "ready") return; // loading blocks the worker for as long as the model takes
      if (late) this.lastHeard = now;
      const silentMs = now - this.lastHeard;
      // Silence while the worker's CPU time grows is one long synchronous step (a 512-token
      // prompt chunk or an embedding batch of a large model on CPU can take longer than the
      // timeout), not a hang: a silent worker is killed when its CPU time stands still (stopped,
      // deadlocked) or after ten timeouts whatever it does. /proc is read only while it is silent.
      const cpu = silentMs > 2 * this.heartbeat.intervalMs && child.pid !== undefined ? (readProcStats(child.pid)?.cpuSeconds ?? null) : null;
      const computing = cpu !== null && cpuBefore !== null && cpu > cpuBefore;
      cpuBefore = cpu;
      if (silentMs > this.heartbeat.timeoutMs && !(computing && silentMs < 10 * this.heartbeat.timeoutMs)) {
        clearInterval(timer);
        this.setState("unhealthy", `silent for ${(silentMs / 1000).toFixed(1)} s`);
        this.log.error(`Worker of ${this.label} (pid ${child.pid}) stopped answering for ${(silentMs / 1000).toFixed(1)} s: killing it`);
        child.kill("SIGKILL"); // SIGKILL also ends a stopped process; its exit fails its requests and restarts it
        return;
      }
      child.send({ type: "ping" } satisfies MainToWorker);
    }, this.heartbeat.intervalMs);
    timer.unref();
    child.once("exit", () => clearInterval(timer));
  }

  private get label(): string {
    return `model ${this.init.name} ${this.init.version}`;
  }

  /**
   * The IPC listener must never throw: an exception there is uncaught and ends the server with
   * every request in it. What goes wrong while one request's message is handled (its sink
   * writing the response) fails that request alone: its generation is cancelled in the worker
   * and its promise rejects with the error.
   */
  private receive(msg: WorkerToMain): void {
    this.lastHeard = performance.now();
    if (msg.type === "batch") {
      for (const m of msg.msgs) this.receive(m);
      return;
    }
    try {
      this.onMessage(msg);
    } catch (caught) {
      const err = caught instanceof Error ? caught : new Error(String(caught));
      const id = "id" in msg ? msg.id : undefined;
      const requestId = id === undefined ? undefined : this.pending.get(id)?.requestId;
      this.log.error(`Handling "${msg.type}" from the worker of ${this.label} failed${requestId ? ` for request ${requestId}` : ""}; that request fails: ${err.message}`, requestId ? { request_id: requestId } : undefined);
      if (id !== undefined) this.abort(id, err);
    }
  }

  private onMessage(msg: Exclude<WorkerToMain, { type: "batch" }>): void {
    switch (msg.type) {
      case "text": {
        const p = this.pending.get(msg.id);
        if (p?.kind === "generate") p.sink.onText(msg.text, msg.logprobs, msg.n);
        return;
      }
      case "started": {
        const p = this.pending.get(msg.id);
        if (p?.kind === "generate") p.sink.onStart?.(msg.promptTokens);
        return;
      }
      case "done": {
        const p = this.pending.get(msg.id);
        this.settle(msg.id);
        if (p?.kind === "generate") p.resolve({ finishReason: msg.finishReason, promptTokens: msg.promptTokens, completionTokens: msg.completionTokens, cachedTokens: msg.cachedTokens });
        return;
      }
      case "prepared": {
        const p = this.pending.get(msg.id);
        this.settle(msg.id);
        if (p?.kind === "prepare") p.resolve({ id: msg.id, promptTokens: msg.promptTokens, incarnation: this.incarnation });
        return;
      }
      case "embedded": {
        const p = this.pending.get(msg.id);
        this.settle(msg.id);
        if (p?.kind === "embed") p.resolve({ data: msg.data, tokens: msg.tokens });
        return;
      }
      case "failed": {
        const p = this.pending.get(msg.id);
        this.settle(msg.id);
        p?.reject(new MoltbotError(msg.code, msg.message));
        return;
      }
      case "ready":
        this.info = msg.info;
        this.readyAt = this.clock();
        this.log.info(`Model ${this.init.version} loaded successfully (${this.init.name}, ${msg.loadMs} ms, pid ${this.child?.pid})`);
        if (msg.info.placement !== undefined) this.log.info(describePlacement(this.init.name, msg.info.placement));
        if (msg.info.kvCacheTokens > 0) {
          const perToken = msg.info.kvBytesPerToken;
          this.log.info(
            `KV cache of ${this.init.name}: ${msg.info.kvCacheTokens} tokens x ${(perToken / 1024).toFixed(1)} KiB = ${((msg.info.kvCacheTokens * perToken) / 2 ** 20).toFixed(0)} MiB, shared by ${this.init.parallel} slot(s) and cached prompt prefixes`,
          );
        }
        // A worker closed while loading stays draining: its shutdown is on its way.
        if (this.current === "loading") {
          this.settleFirstStart();
          this.setState("ready", `loaded in ${msg.loadMs} ms`);
        }
        return;
      case "fatal":
        this.log.error(`${this.label} cannot load: ${msg.message}`);
        // After a restart the exit that follows takes the crash path (and retries).
        if (this.firstStart && (this.current === "spawning" || this.current === "loading")) {
          const first = this.firstStart;
          this.firstStart = undefined;
          this.setState("failed", msg.message);
          first.reject(new MoltbotError(msg.code, msg.message));
        }
        return;
      case "pong": // its arrival is what counts (receive)
        return;
      case "log":
        this.log.child(msg.component)[msg.level === "WARNING" ? "warning" : msg.level === "DEBUG" ? "debug" : msg.level === "ERROR" ? "error" : "info"](msg.message);
        return;
    }
  }

  private settle(id: number): void {
    this.pending.delete(id);
    if (this.pending.size === 0) this.drained?.();
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null, spawnError?: string): void {
    if (child !== this.child) return;
    this.child = undefined;
    const oomKills = this.confinement?.oomKills() ?? null;
    const oom = oomKills !== null && oomKills > (this.oomBaseline ?? 0) && this.current !== "draining";
    const limit = this.confinement?.memoryLimit ?? "?";
    if (oom) {
      // A run of stableMs since this process started ends a streak of kills.
      this.oomKillsInRow = this.readyAt >= this.spawnedAt && this.clock() - this.readyAt >= this.policy.stableMs ? 1 : this.oomKillsInRow + 1;
      // The seed's wording: "[ERROR] [worker] model X v2.0 killed: memory limit 4GiB exceeded".
      this.log.child("worker").error(`${this.label} killed: memory limit ${limit} exceeded`);
    }
    const how = oom ? `killed by its memory limit ${limit}, ${this.oomKillsInRow} of ${MAX_OOM_KILLS} in a row` : (spawnError ?? (signal ? `signal ${signal}` : `code ${code}`));
    const givesUp = oom && this.oomKillsInRow >= MAX_OOM_KILLS;
    const crashed = new MoltbotError("worker_crashed", `the worker of ${this.label} exited unexpectedly (${how}); ${givesUp ? "it is not restarted" : "it is being restarted"}`);
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(crashed);
    }
    this.drained?.();
    if (this.current === "draining") return this.setState("stopped", `exited (${how})`);
    if (!isLive(this.current)) return; // failed: the fatal message came first
    if (givesUp) {
      const why = `killed by its memory limit ${limit} ${this.oomKillsInRow} times in a row; raise resource_limits.memory.limit or lower its context_size/max_batch_size`;
      this.log.child("worker").error(`${this.label} marked failed: ${why}`);
      if (this.current !== "loading" && this.current !== "spawning") this.setState("crashed", `exited (${how})`);
      this.failure = why;
      this.setState("failed", why);
      this.settleFirstStart(new MoltbotError("insufficient_memory", `${this.label} cannot run within its memory limit: ${why}`));
      return;
    }
    if (this.firstStart && !oom) {
      const first = this.firstStart;
      this.firstStart = undefined;
      this.setState("failed", `exited while loading (${how})`);
      first.reject(new MoltbotError("repository_invalid", `the worker of ${this.label} exited while loading (${how})`));
      return;
    }
    this.setState("crashed", `exited (${how})`);
    if (!this.still("crashed")) return; // a listener closed it
    if (this.readyAt > 0 && this.clock() - this.readyAt >= this.policy.stableMs) this.backoffMs = this.policy.initialMs;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.policy.maxMs);
    this.restarts++;
    this.log.error(`Worker of ${this.label} exited (${how}); restarting in ${delay} ms`);
    this.setState("restarting", `in ${delay} ms`);
    if (!this.still("restarting")) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.current === "restarting") this.spawn();
    }, delay);
  }

  /** What a request gets while the worker is not ready: worth a retry, or why not (failed). */
  notReadyError(): MoltbotError {
    const shuttingDown = this.current === "stopped" || (this.current === "draining" && this.refusal === "server_shutting_down");
    const why = shuttingDown ? "is shutting down" : this.current === "failed" && this.failure ? `is failed (${this.failure})` : `is ${this.current}`;
    return new MoltbotError(this.current === "draining" ? this.refusal : "worker_unavailable", `${this.label} ${why}${this.current === "failed" && this.failure ? "" : "; retry shortly"}`);
  }

  /**
   * Send `msg` and remember, under its id, how its answer settles the promise (`pending` builds
   * the entry of its kind); refused at once when the worker is not ready.
   */
  private request<T>(msg: MainToWorker & { id: number }, pending: (resolve: (value: T) => void, reject: (err: Error) => void) => Pending): Promise<T> {
    if (this.current !== "ready" || !this.child) return Promise.reject(this.notReadyError());
    return new Promise<T>((resolve, reject) => {
      this.pending.set(msg.id, pending(resolve, reject));
      this.child!.send(msg);
    });
  }

  /** Tokenize in the worker; the count is known before any budget or queue decision. */
  prepare(prompt: PromptInput): Promise<PreparedPrompt> {
    const id = this.nextId++;
    return this.request<PreparedPrompt>({ type: "prepare", id, prompt }, (resolve, reject) => ({ kind: "prepare", resolve, reject }));
  }

  /** Forget a prepared prompt that will not run here. */
  discard(prepared: PreparedPrompt): void {
    if (this.child?.connected) this.child.send({ type: "discard", id: prepared.id } satisfies MainToWorker);
  }

  /** Generate from a prompt, or from a prepared one (which is then consumed). `requestId` names it in the log. */
  generate(prompt: PromptInput | PreparedPrompt, params: GenerationParams, sink: GenerationSink, signal?: AbortSignal, requestId?: string): Promise<GenerationDone> {
    const isPrepared = "id" in prompt;
    if (isPrepared && prompt.incarnation !== this.incarnation) {
      return Promise.reject(new MoltbotError("worker_crashed", `the worker of ${this.label} restarted after this request was prepared; retry`));
    }
    const id = isPrepared ? prompt.id : this.nextId++;
    const msg: MainToWorker & { id: number } = isPrepared ? { type: "generate", id, params } : { type: "generate", id, prompt, params };
    const done = this.request<GenerationDone>(msg, (resolve, reject) => ({ kind: "generate", resolve, reject, sink, requestId }));
    if (signal) {
      const onAbort = () => this.cancel(id);
      if (signal.aborted) onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      void done.then(
        () => signal.removeEventListener("abort", onAbort),
        () => signal.removeEventListener("abort", onAbort),
      );
    }
    return done;
  }

  /**
   * Embed inputs. Calls that arrive while an embedding is running are grouped and sent as one
   * evaluation when it ends (the engine packs several inputs into one batch), so concurrent
   * small requests share a decode; an idle worker starts at once, without waiting.
   */
  embed(inputs: string[]): Promise<EmbedResult> {
    return new Promise((resolve, reject) => {
      this.embedQueue.push({ inputs, resolve, reject });
      if (!this.embedRunning) void this.flushEmbeds();
    });
  }

  private async flushEmbeds(): Promise<void> {
    this.embedRunning = true;
    while (this.embedQueue.length > 0) {
      const group = this.embedQueue.splice(0, this.embedQueue.length);
      const id = this.nextId++;
      this.embedBatches++;
      try {
        const r = await this.request<EmbedResult>({ type: "embed", id, inputs: group.flatMap((g) => g.inputs) }, (resolve, reject) => ({ kind: "embed", resolve, reject }));
        let at = 0;
        for (const g of group) {
          const n = g.inputs.length;
          g.resolve({ data: r.data.slice(at, at + n), tokens: r.tokens.slice(at, at + n) });
          at += n;
        }
      } catch (err) {
        // One input too long fails its own request only: retry the others alone.
        if (group.length > 1 && err instanceof MoltbotError && err.code === "context_length_exceeded") {
          for (const g of group) this.request<EmbedResult>({ type: "embed", id: this.nextId++, inputs: g.inputs }, (resolve, reject) => ({ kind: "embed", resolve, reject })).then(g.resolve, g.reject);
        } else {
          for (const g of group) g.reject(err as Error);
        }
      }
    }
    this.embedRunning = false;
  }

  /** Stops a generation and frees its slot; its promise rejects with `code`. */
  cancel(id: number, code: ErrorCode = "invalid_request"): void {
    this.abort(id, new MoltbotError(code, "generation cancelled"));
  }

  private abort(id: number, err: Error): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.settle(id);
    if (this.child?.connected) this.child.send({ type: "cancel", id } satisfies MainToWorker);
    p.reject(err);
  }

  /**
   * Lets in-flight work finish (up to the deadline), then stops the process (SIGKILL when it
   * does not exit). Requests arriving meanwhile are refused with `refusal`: a server shutting
   * down says so; a version switch passes `worker_unavailable` so they are retried elsewhere.
   * Idempotent: a second call waits for the first.
   */
  close(deadlineMs = 10_000, refusal: ErrorCode = "server_shutting_down"): Promise<void> {
    this.closing ??= this.stop(deadlineMs, refusal);
    return this.closing;
  }

  private async stop(deadlineMs: number, refusal: ErrorCode): Promise<void> {
    if (this.current === "stopped") return;
    this.refusal = refusal;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const child = this.child;
    if (isLive(this.current)) this.setState("draining", "close");
    if (!child) return this.setState("stopped", "close without a process");
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    const drained = this.pending.size === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.drained = resolve));
    let deadlineTimer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (deadlineTimer = setTimeout(resolve, deadlineMs).unref()));
    await Promise.race([drained, deadline]);
    clearTimeout(deadlineTimer);
    if (child.connected) child.send({ type: "shutdown" } satisfies MainToWorker);
    const killTimer = setTimeout(() => child.kill("SIGKILL"), Math.max(1000, deadlineMs / 4)).unref();
    await exited;
    clearTimeout(killTimer);
    // Draining ends in onExit; a worker that failed to load ends here, its process gone.
    if (!this.still("stopped")) this.setState("stopped", "closed");
  }
}
