// One repository model served from one of its versions at a time, switched blue/green:
//
//   activate(v2) -> load v2 in a new worker beside v1 -> validate it (config.json) -> swap
//   the worker new requests go to (one assignment: a request sees v1 or v2, never a mix)
//   -> v1's worker drains (its running requests finish on v1) and stops
//
// If v2 cannot load or fails validation, v1 was never touched. One switch at a time per
// model (a second gets 409 switch_in_progress); rollback is an activation of the version
// served before. The switch is persisted (version-store.ts) so it survives a restart.
//
// The scheduler (the model's slots and queue) is shared by the versions: during a switch the
// old worker's running requests hold their slots until they finish, so the model never runs
// more than its `parallel` requests at once. It is drained while the serving worker is down
// (queued requests fail over or are retried, pool and generate.ts) and resumed when it is back.
import { existsSync, statSync } from "node:fs";
import { MoltbotError } from "../errors.js";
import type { Logger } from "../observe/logger.js";
import { availableMemoryBytes } from "../observe/proc-stats.js";
import { listModelVersions, loadModelVersion, type ModelVersion, type RepositoryModel } from "../repository/repository.js";
import { compareVersions } from "../repository/versions.js";
import type { ModelScheduler } from "../scheduler/model-scheduler.js";
import type { ModelWorker } from "../workers/model-worker.js";
import type { WorkerState } from "../workers/worker-state.js";
import { fileChecks, validateVersion, type ValidationCheck, type ValidationReport } from "./validation.js";
import type { VersionStore } from "./version-store.js";

export interface VersionedModelOptions {
  /** Its `active` is the version being served: changed here only. */
  model: RepositoryModel;
  scheduler: ModelScheduler;
  /** A new worker (not started) for a version of this model. */
  newWorker(version: ModelVersion): Promise<ModelWorker>;
  store: VersionStore;
  /** The model_loader logger. */
  log: Logger;
  /** How long an old version's running requests may take to finish after a switch. */
  drainTimeoutMs: number;
}

export interface SwitchResult {
  model: string;
  version: string;
  previous: string | null;
  /** From the request to the moment new requests went to the new version. */
  switch_ms: number;
  /** Null when the version was already active (nothing was done). */
  validation: ValidationReport | null;
}

export type VersionState = "active" | "loading" | "draining" | "available" | "failed";

export interface VersionListing {
  version: string;
  state: VersionState;
  path: string | null;
  size_bytes: number | null;
  quantization: string | null;
  error: string | null;
  validation: ValidationReport | null;
}

export interface ModelListing {
  name: string;
  active_version: string;
  previous_version: string | null;
  /** The activation, rollback or validation under way. */
  switching: { to: string; since: string; what: "activation" | "rollback" | "validation" } | null;
  versions: VersionListing[];
}

/** Worker states in which the serving worker cannot take requests until it is back. */
const DOWN: ReadonlySet<WorkerState> = new Set(["unhealthy", "crashed", "restarting", "spawning", "loading"]);

export class VersionedModel {
  private serving: ModelWorker;
  private stopWatching: () => void = () => undefined;
  /** Old versions' workers finishing their requests. */
  private readonly draining = new Set<ModelWorker>();
  /** Workers loading a version to validate or activate it, by version. */
  private readonly candidates = new Map<string, ModelWorker>();
  /** Why a version last failed to load or validate, by version (for the listing). */
  private readonly failures = new Map<string, string>();
  /** The one switch or validation under way. */
  private switching: { to: string; since: Date; what: "activation" | "rollback" | "validation" } | undefined;
  private previous: string | undefined;
  private closed = false;

  /** `worker`: the (not yet started) worker of the model's active version. */
  constructor(private readonly opts: VersionedModelOptions, worker: ModelWorker) {
    this.previous = opts.store.get(opts.model.name).previous;
    if (this.previous === opts.model.active.version) this.previous = undefined;
    this.serving = worker;
    this.watch(worker);
  }

  get name(): string {
    return this.opts.model.name;
  }

  /** The worker new requests go to. */
  get worker(): ModelWorker {
    return this.serving;
  }

  get version(): string {
    return this.opts.model.active.version;
  }

  get scheduler(): ModelScheduler {
    return this.opts.scheduler;
  }

  /** Loads the serving version; rejects when it cannot load. */
  start(): Promise<void> {
    return this.serving.start();
  }

  /**
   * Resolves when the serving worker (whichever it is by then: a switch may replace it) is
   * ready; rejects when none is within `timeoutMs`, or on abort.
   */
  async whenReady(signal: AbortSignal | undefined, timeoutMs: number): Promise<void> {
    const end = performance.now() + timeoutMs;
    for (;;) {
      const worker = this.serving;
      try {
        return await worker.whenReady(signal, Math.max(0, end - performance.now()));
      } catch (err) {
        // Replaced while we waited: wait for the new one instead.
        if (worker === this.serving || signal?.aborted || performance.now() >= end) throw err;
      }
    }
  }

  /** The serving worker's state drives the scheduler: drained while it is down, resumed when back. */
  private watch(worker: ModelWorker): void {
    this.stopWatching();
    this.stopWatching = worker.onStateChange((to) => {
      if (worker !== this.serving) return;
      if (to === "ready") this.opts.scheduler.resume();
      else if (DOWN.has(to)) this.opts.scheduler.drain(new MoltbotError("worker_crashed", `the worker of model ${this.name} ${this.version} is ${to}; retry shortly`));
    });
  }

  activate(version: string, who: string): Promise<SwitchResult> {
    return this.exclusively(version, "activation", () => this.switchTo(version, who, "Activation"));
  }

  rollback(who: string): Promise<SwitchResult> {
    const to = this.previous;
    if (to === undefined) {
      return Promise.reject(new MoltbotError("no_previous_version", `model ${this.name} has no previous version to roll back to (serving ${this.version} since it was first activated)`));
    }
    return this.exclusively(to, "rollback", () => this.switchTo(to, who, "Rollback"));
  }

  /** Loads `version` (default: the serving one) in a fresh worker beside the serving one, runs its checks, stops it. */
  validate(version: string | undefined, who: string): Promise<ValidationReport> {
    const v = version ?? this.version;
    return this.exclusively(v, "validation", async () => {
      this.opts.log.info(`Validation of ${this.name} ${v} requested by ${who}`);
      const target = await this.load(v);
      const { files, failed } = await this.checkFiles(target);
      if (failed) return failed;
      const { worker, report } = await this.loadAndValidate(target, files);
      await worker.close(0, "worker_unavailable");
      return report;
    });
  }

  /** One switch or validation at a time: the second gets 409 at once, the first is not disturbed. */
  private async exclusively<T>(version: string, what: "activation" | "rollback" | "validation", job: () => Promise<T>): Promise<T> {
    if (this.closed) throw new MoltbotError("server_shutting_down", "the server is shutting down");
    const busy = this.switching;
    if (busy) {
      throw new MoltbotError("switch_in_progress", `model ${this.name} is busy with the ${busy.what} of ${busy.to} (since ${busy.since.toISOString()}); wait for it to finish`);
    }
    this.switching = { to: version, since: new Date(), what };
    try {
      return await job();
    } finally {
      this.switching = undefined;
    }
  }

  /** The version's folder and files, re-read from disk. */
  private async load(version: string): Promise<ModelVersion> {
    try {
      const v = await loadModelVersion(this.opts.model, version);
      if (v.config.type !== this.opts.model.active.config.type) {
        throw new MoltbotError("version_invalid", `${v.dir}: ${this.name} ${version} is an ${v.config.type} model but ${this.name} serves ${this.opts.model.active.config.type} requests`);
      }
      return v;
    } catch (err) {
      if (err instanceof MoltbotError && err.code === "version_invalid") this.failures.set(version, err.message);
      throw err;
    }
  }

  /**
   * `v`'s files (GGUF integrity, sha256): when one fails, also the report saying so (its prompts
   * not run), recorded. Run before anything loads: a truncated copy costs no worker.
   */
  private async checkFiles(v: ModelVersion): Promise<{ files: ValidationCheck[]; failed?: ValidationReport }> {
    const files = await fileChecks(v);
    if (files.every((c) => c.passed)) return { files };
    const failed = await validateVersion(v, () => Promise.reject(new Error("not run")), files);
    await this.record(failed);
    return { files, failed };
  }

  /**
   * Starts a worker for `v` beside the serving one and runs its validation prompts (`files`:
   * its file checks, passed). A version that cannot load is `version_invalid`; the report is kept.
   */
  private async loadAndValidate(v: ModelVersion, files: ValidationCheck[]): Promise<{ worker: ModelWorker; report: ValidationReport }> {
    this.checkMemory(v);
    const worker = await this.opts.newWorker(v);
    this.candidates.set(v.version, worker);
    try {
      try {
        await worker.start();
      } catch (err) {
        const message = `${this.name} ${v.version} cannot load: ${(err as Error).message}`;
        this.failures.set(v.version, message);
        throw new MoltbotError("version_invalid", message, { cause: err });
      }
      const report = await validateVersion(v, (prompt, maxTokens) => greedyText(worker, prompt, maxTokens), files);
      await this.record(report);
      return { worker, report };
    } catch (err) {
      await worker.close(0, "worker_unavailable");
      throw err;
    } finally {
      this.candidates.delete(v.version);
    }
  }

  /** Keeps a version's last report (persisted) and whether it counts as failed. */
  private async record(report: ValidationReport): Promise<void> {
    await this.opts.store.setValidation(this.name, report);
    if (report.passed) this.failures.delete(report.version);
    else this.failures.set(report.version, `validation failed: ${failedChecks(report)}`);
  }

  /**
   * Two versions side by side need room for both: refuse before loading rather than have the
   * kernel's OOM killer pick a process. The estimate is the weights (mapped and read in whole)
   * plus the KV buffer the serving worker allocated (the new one gets the same settings).
   */
  private checkMemory(v: ModelVersion): void {
    const info = this.serving.info;
    const kvBytes = info ? info.kvCacheTokens * info.kvBytesPerToken : 0;
    let weights: number;
    try {
      weights = statSync(v.weightsPath).size;
    } catch (err) {
      throw new MoltbotError("version_invalid", `${v.weightsPath}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); ${this.version} keeps serving`);
    }
    const need = weights + kvBytes;
    const available = availableMemoryBytes();
    if (need > available) {
      const mib = (n: number) => `${Math.ceil(n / 2 ** 20)} MiB`;
      throw new MoltbotError(
        "insufficient_memory",
        `loading ${this.name} ${v.version} beside ${this.version} needs about ${mib(need)} (weights ${mib(weights)}, KV cache ${mib(kvBytes)}) but ${mib(available)} is available; nothing was loaded and ${this.version} keeps serving`,
      );
    }
  }

  private async switchTo(version: string, who: string, what: "Activation" | "Rollback"): Promise<SwitchResult> {
    const t0 = performance.now();
    const from = this.version;
    const log = this.opts.log;
    if (version === from) {
      log.info(`${what} of ${this.name} ${version} requested by ${who}: already active, nothing to do`);
      return { model: this.name, version, previous: this.previous ?? null, switch_ms: 0, validation: null };
    }
    log.info(`${what} of ${this.name} ${version} requested by ${who} (serving ${from}): loading it beside ${from}`);
    let target: ModelVersion;
    let checked: { worker: ModelWorker; report: ValidationReport };
    try {
      target = await this.load(version);
      const { files, failed } = await this.checkFiles(target);
      if (failed) throw new MoltbotError("version_invalid", `${this.name} ${version} cannot be served: ${failedChecks(failed, files)}; ${from} keeps serving`);
      checked = await this.loadAndValidate(target, files);
    } catch (err) {
      log.error(`${what} of ${this.name} ${version} refused, ${from} keeps serving: ${(err as Error).message}`);
      throw err;
    }
    if (!checked.report.passed) {
      await checked.worker.close(0, "worker_unavailable");
      const message = `${this.name} ${version} failed validation (${failedChecks(checked.report)}); ${from} keeps serving`;
      log.error(`${what} of ${this.name} ${version} refused: ${message}`);
      throw new MoltbotError("validation_failed", message);
    }
    if (this.closed) {
      await checked.worker.close(0);
      throw new MoltbotError("server_shutting_down", "the server is shutting down");
    }
    if (!existsSync(target.weightsPath)) {
      // Loaded from a file that is gone: it would not come back after a restart of the worker.
      await checked.worker.close(0, "worker_unavailable");
      const message = `${target.weightsPath} was removed while ${this.name} ${version} was loading; ${from} keeps serving`;
      this.failures.set(version, message);
      log.error(`${what} of ${this.name} ${version} refused: ${message}`);
      throw new MoltbotError("version_invalid", message);
    }
    // The switch itself: from here on new requests (and queued ones when they get a slot) go
    // to the new worker; requests holding the old one finish there.
    const old = this.serving;
    this.serving = checked.worker;
    this.opts.model.active = target;
    this.opts.scheduler.setSlots(checked.worker.init.parallel);
    this.watch(checked.worker);
    this.opts.scheduler.resume();
    this.previous = from;
    const switchMs = Math.round(performance.now() - t0);
    log.info(`Model ${this.name} switched from ${from} to ${version} in ${switchMs} ms (requested by ${who}); ${from} drains its running requests`);
    this.draining.add(old);
    void old.close(this.opts.drainTimeoutMs, "worker_unavailable").finally(() => {
      this.draining.delete(old);
      log.info(`Model ${this.name} ${from} stopped`);
    });
    try {
      await this.opts.store.setActive(this.name, version, from);
    } catch (err) {
      log.error(`${this.name} now serves ${version} but the choice could not be saved (${(err as Error).message}); a restart would serve the version chosen at start`);
    }
    return { model: this.name, version, previous: from, switch_ms: switchMs, validation: checked.report };
  }

  /** Every version on disk with its state and last validation, for GET /admin/models. */
  async listing(): Promise<ModelListing> {
    const validations = this.opts.store.get(this.name).validations ?? {};
    const draining = new Set([...this.draining].map((w) => w.init.version));
    const found = await listModelVersions(this.opts.model);
    return {
      name: this.name,
      active_version: this.version,
      previous_version: this.previous ?? null,
      switching: this.switching ? { to: this.switching.to, since: this.switching.since.toISOString(), what: this.switching.what } : null,
      versions: found.map((v) => {
        const error = v.error ?? (v.version === this.version ? null : (this.failures.get(v.version) ?? null));
        const state: VersionState =
          v.version === this.version ? "active" : this.candidates.has(v.version) ? "loading" : draining.has(v.version) ? "draining" : error !== null ? "failed" : "available";
        return { version: v.version, state, path: v.path, size_bytes: v.sizeBytes, quantization: v.quantization, error, validation: validations[v.version] ?? null };
      }),
    };
  }

  /** Versions on disk newer than every version seen so far (the repository watcher). */
  async newVersions(seen: ReadonlySet<string>): Promise<string[]> {
    const found = await listModelVersions(this.opts.model);
    return found.map((v) => v.version).filter((v) => !seen.has(v)).sort(compareVersions);
  }

  /** Stops every worker of this model: the serving one drains within the deadline. */
  async close(deadlineMs: number): Promise<void> {
    this.closed = true;
    this.stopWatching();
    await Promise.all([this.serving.close(deadlineMs), ...[...this.draining, ...this.candidates.values()].map((w) => w.close(deadlineMs))]);
  }
}

/** The failed checks (of `checks`, default all of the report's) in one line. */
function failedChecks(report: ValidationReport, checks: readonly ValidationCheck[] = report.checks): string {
  return checks
    .filter((c) => !c.passed)
    .map((c) => `${c.name}: ${c.detail}`)
    .join("; ");
}

/** A validation prompt's completion: plain text, greedy, so a golden output is exact. */
async function greedyText(worker: ModelWorker, prompt: string, maxTokens: number): Promise<string> {
  let text = "";
  await worker.generate(
    { kind: "text", text: prompt },
    { maxTokens, temperature: 0, topP: 1, seed: 0, minTokens: 0, ignoreEos: false, stop: [], topLogprobs: null, cachePrompt: false },
    { onText: (t) => (text += t) },
  );
  return text;
}
