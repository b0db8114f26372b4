// The server's lifecycle: repository -> one worker per model -> pool -> HTTP listener.
// close() runs in reverse: stop accepting, let in-flight requests finish, stop workers,
// all under one deadline after which stragglers are cut off.
import type { AddressInfo } from "node:net";
import type { Server as TlsServer } from "node:tls";
import type { FastifyInstance } from "fastify";
import type { LoadedConfig } from "../config/load.js";
import type { MoltbotConfig } from "../config/schema.js";
import { checkSecurity } from "../config/security.js";
import { parseBytes, parseDuration } from "../config/units.js";
import { AuditLog } from "../audit/audit-log.js";
import { auditOptions } from "../audit/settings.js";
import type { EngineKind } from "../engine/load-engine.js";
import { MoltbotError } from "../errors.js";
import { readGgufMetadata } from "../gguf/reader.js";
import type { Logger } from "../observe/logger.js";
import { ServerMetrics } from "../observe/metrics.js";
import { openSqliteLedger, ledgerPath } from "../ledger/sqlite-ledger.js";
import type { BudgetLedger } from "../ledger/ledger.js";
import { describeMarker } from "../ledger/ledger-marker.js";
import { ModelPool, type PoolEntry } from "../pool/model-pool.js";
import { planPool, type ModelPlan } from "../pool/plan.js";
import { ModelScheduler } from "../scheduler/model-scheduler.js";
import { loadModelVersion, openRepository, type ModelVersion, type RepositoryModel } from "../repository/repository.js";
import { RepositoryWatcher } from "../versions/repository-watcher.js";
import { VersionedModel } from "../versions/versioned-model.js";
import { VersionStore } from "../versions/version-store.js";
import { ModelWorker } from "../workers/model-worker.js";
import type { WorkerInit } from "../workers/protocol.js";
import { CgroupManager } from "../workers/cgroups/manager.js";
import { ownHierarchies } from "../workers/cgroups/hierarchy.js";
import { hasLimits, threadsWithinQuota } from "../workers/cgroups/limits.js";
import { endOpenLifetimes } from "./deadline.js";
import { describeCertificate, loadTls, type TlsMaterial } from "./tls.js";
import { openServerAuth, type ServerAuth } from "../auth/server-auth.js";
import { cacheOptions, ResponseCache } from "../cache/response-cache.js";

export interface ServerOptions {
  loaded: LoadedConfig;
  /** Repository directory or GGUF file. */
  modelPath: string;
  log: Logger;
  engine: EngineKind;
  threads: number;
  modelVersion?: string | undefined;
  /** Injected for the ledger's month rollover in tests. */
  clock?: () => Date;
  /** Start a new, empty budget ledger when the one data_dir recorded is gone (deploy --accept-new-ledger). */
  acceptNewLedger?: boolean;
  /** The response cache's clock in milliseconds (TTLs; default Date.now). */
  cacheNow?: () => number;
}

/** Default per-sequence context when neither config.json nor moltbot.yaml sets one. */
const DEFAULT_CONTEXT_CAP = 4096;

async function contextSizeFor(version: ModelVersion, configured: number | undefined): Promise<number> {
  const fromModel = version.config.context_size ?? configured;
  if (fromModel !== undefined) return fromModel;
  const meta = (await readGgufMetadata(version.weightsPath)).metadata;
  const arch = meta.get("general.architecture");
  const trained = meta.get(`${String(arch)}.context_length`);
  return typeof trained === "number" && trained > 0 ? Math.min(trained, DEFAULT_CONTEXT_CAP) : DEFAULT_CONTEXT_CAP;
}

/** engine.* with a pool entry's `gpu` applied: false puts the model on the CPU, an index on that GPU. */
function placementOf(engine: MoltbotConfig["engine"], gpu: number | false | undefined, kind: EngineKind): NonNullable<WorkerInit["placement"]> {
  if (kind === "node-llama-cpp" && (engine.library_dir !== undefined || engine.backend === "cuda" || engine.backend === "vulkan")) {
    throw new MoltbotError("config_invalid", `engine.backend ${engine.backend}${engine.library_dir === undefined ? "" : " and engine.library_dir"}: supported by worker.engine ffi only (this server runs node-llama-cpp)`);
  }
  const mainGpu = typeof gpu === "number" ? gpu : engine.main_gpu;
  return {
    backend: gpu === false ? "cpu" : engine.backend,
    ...(engine.gpu_layers === undefined ? {} : { gpuLayers: engine.gpu_layers }),
    ...(mainGpu === undefined || gpu === false ? {} : { mainGpu }),
    ...(engine.library_dir === undefined ? {} : { libraryDir: engine.library_dir }),
  };
}

export class MoltbotServer {
  private app: FastifyInstance | undefined;
  private pool: ModelPool | undefined;
  private ledger: BudgetLedger | undefined;
  private auth: ServerAuth | undefined;
  private repo: RepositoryModel[] = [];
  private served = new Map<string, VersionedModel>();
  private watcher: RepositoryWatcher | undefined;
  private auditLog: AuditLog | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;
  private tls: TlsMaterial | undefined;
  private cache: ResponseCache | undefined;
  /** The workers' cgroups (resource_limits); created at start. */
  private cgroups: CgroupManager | undefined;

  constructor(private readonly opts: ServerOptions) {}

  get address(): { host: string; port: number } {
    const a = this.app?.server.address() as AddressInfo | null | undefined;
    if (!a) throw new Error("server is not listening");
    return { host: a.address, port: a.port };
  }

  /** "http://host:port" of the listener ("https://" with security.tls). */
  get listenUrl(): string {
    const { host, port } = this.address;
    return `${this.tls === undefined ? "http" : "https"}://${host.includes(":") ? `[${host}]` : host}:${port}`;
  }

  /** Where the ledger and other state live. */
  get dataDir(): string {
    return this.opts.loaded.dataDir;
  }

  get models(): ModelPool {
    if (!this.pool) throw new Error("server is not started");
    return this.pool;
  }

  /** The repository's models as opened at start (a config reload validates model_pool against them). */
  get repository(): readonly RepositoryModel[] {
    return this.repo;
  }

  /** The audit log (every request and admin action), once started. */
  get audit(): AuditLog | undefined {
    return this.auditLog;
  }

  /** The served models by name, with their versions (the admin API switches them). */
  get versions(): ReadonlyMap<string, VersionedModel> {
    return this.served;
  }

  /**
   * Without MODEL_VERSION, a model serves the version last activated (model-versions.json in
   * data_dir) when it is still there; else the repository's choice, with a warning. The one
   * place outside VersionedModel that sets `active`: before any worker exists.
   */
  private async restoreActiveVersions(repo: RepositoryModel[], store: VersionStore): Promise<void> {
    const log = this.opts.log.child("model_loader");
    for (const model of repo) {
      const wanted = store.get(model.name).active;
      if (wanted === undefined || wanted === model.active.version) continue;
      try {
        model.active = await loadModelVersion(model, wanted);
        log.info(`Model ${model.name}: serving ${wanted}, the version last activated (${store.file})`);
      } catch (err) {
        log.warning(`Model ${model.name}: ${wanted} was the version last activated but cannot be served (${(err as Error).message}); serving ${model.active.version}`);
      }
    }
  }

  /** A worker (not started) for one version of a planned model. */
  private async newWorker(m: ModelPlan, version: ModelVersion): Promise<ModelWorker> {
    const cfg = this.opts.loaded.config;
    const placement = placementOf(cfg.engine, m.gpu, this.opts.engine);
    const init: WorkerInit = {
      name: m.model.name,
      version: version.version,
      modelPath: version.weightsPath,
      contextSize: m.contextSize ?? (await contextSizeFor(version, cfg.context_size)),
      parallel: m.parallel,
      threads: threadsWithinQuota(this.opts.threads, m.limits),
      embedding: version.config.type === "embedding",
      speculative: m.speculative,
      promptCacheBytes: m.promptCacheBytes,
      ...(m.kvCacheTokens === undefined ? {} : { kvCacheTokens: m.kvCacheTokens }),
      engine: this.opts.engine,
      placement,
    };
    this.opts.log.child("model_loader").info(`Loading model ${init.name} ${init.version} from ${init.modelPath} (engine ${init.engine}, backend ${placement.backend}, ${init.threads} thread(s), ${init.parallel} slot(s), context ${init.contextSize})`);
    return new ModelWorker(
      init,
      this.opts.log.child("model_loader"),
      { initialMs: cfg.worker.restart_backoff_ms.initial, maxMs: cfg.worker.restart_backoff_ms.max, stableMs: 30_000 },
      undefined,
      { intervalMs: Math.min(1000, cfg.worker.heartbeat_timeout_ms / 4), timeoutMs: cfg.worker.heartbeat_timeout_ms },
      hasLimits(m.limits) && this.cgroups ? this.cgroups.group(`model ${init.name} ${init.version}`, m.limits, init.modelPath) : undefined,
    );
  }

  async start(): Promise<void> {
    const { loaded, log } = this.opts;
    const cfg = loaded.config;
    const started = performance.now();
    const startedAt = new Date();
    // Before anything loads: a security setting that cannot be enforced stops the start.
    for (const warning of await checkSecurity(loaded)) log.child("config").warning(warning);
    if (cfg.security.tls !== undefined) {
      this.tls = loadTls(cfg.security.tls);
      const daysLeft = (this.tls.certificate.validTo.getTime() - Date.now()) / 86_400_000;
      if (daysLeft < 14) log.child("server").warning(`The TLS certificate in ${cfg.security.tls.cert_file} expires in ${daysLeft.toFixed(1)} days (${this.tls.certificate.validTo.toISOString()}): renew it, then reload (SIGHUP)`);
      log.child("server").info(`HTTPS only, TLS ${cfg.security.tls.min_version === "TLS1_3" ? "1.3" : "1.2 and 1.3"}${this.tls.clientAuth.requestCert === true ? ", client certificates required" : ""}; certificate ${describeCertificate(this.tls)}`);
    }
    for (const key of loaded.notEnforced) log.child("config").warning(`${key} is set but not yet enforced by this version`);
    const batchTimeouts = [cfg.batching, ...cfg.model_pool.map((e) => e.batching)].filter((b) => b?.timeout_ms !== undefined);
    if (batchTimeouts.length > 0) {
      log.child("config").warning("batching.timeout_ms is ignored: batching is continuous, a request joins the running batch at the next decode step without waiting");
    }

    // First: a missing or cut-short audit log stops the start before any worker loads (fail closed).
    const audit = await AuditLog.open(auditOptions(loaded, log, this.opts.clock));
    this.auditLog = audit;
    let repo: RepositoryModel[];
    try {
      // Before any model loads: a configured key that cannot be read fails the start at once (fail closed).
      this.auth = openServerAuth(cfg, loaded.dataDir, this.opts.clock);
      if (this.auth) log.child("server").info(`Authentication on: ${[cfg.security.jwt ? `JWT (${cfg.security.jwt.algorithms.join(", ")})` : "", this.auth.keys ? `API keys (${this.auth.keys.file})` : ""].filter(Boolean).join(" and ")}`);
      repo = await openRepository(this.opts.modelPath, { modelVersion: this.opts.modelVersion });
    } catch (err) {
      await audit.close();
      throw err;
    }
    this.repo = repo;
    const loaderLog = log.child("model_loader");
    const store = VersionStore.open(loaded.dataDir, (m) => loaderLog.warning(m));
    if (this.opts.modelVersion === undefined) await this.restoreActiveVersions(repo, store);
    else {
      for (const m of repo) {
        const last = store.get(m.name).active;
        if (last !== undefined && last !== m.active.version) loaderLog.info(`Model ${m.name}: MODEL_VERSION chooses ${m.active.version} over ${last}, the version last activated`);
      }
    }
    const plan = planPool(cfg, repo, loaded.file ?? "config");
    // Elsewhere than Linux every limit is reported not enforced, with why.
    this.cgroups = new CgroupManager({ hierarchies: process.platform === "linux" ? ownHierarchies() : [], log: log.child("worker") });
    // Also without limits now: groups a crashed server left are removed.
    this.cgroups.cleanStale();
    const served = new Map<string, VersionedModel>();
    let loading: Promise<unknown> = Promise.resolve();
    try {
      for (const m of plan.models) {
        const model = m.model;
        const newWorker = (version: ModelVersion) => this.newWorker(m, version);
        const scheduler = new ModelScheduler({ slots: m.parallel, maxQueue: m.queue.maxSize, maxWaitMs: m.queue.maxWaitMs });
        const first = await newWorker(model.active);
        served.set(model.name, new VersionedModel({ model, scheduler, newWorker, store, log: loaderLog, drainTimeoutMs: cfg.worker.drain_timeout_ms }, first));
      }
      this.served = served;
      // Workers load in parallel: start-up time is the slowest model, not the sum.
      // Not awaited yet: this process opens the ledger and builds the HTTP app (Fastify and its
      // compiled body schemas) while the workers load, on the other core (docs/benchmarks.md).
      // A model killed by its memory limit at every try is failed; the others serve.
      loading = Promise.all([...served.values()].map((v) => v.start().catch((err: unknown) => {
        if (!(err instanceof MoltbotError && err.code === "insufficient_memory")) throw err;
      })));
      loading.catch(() => undefined); // awaited below; a failure meanwhile is not unhandled
    } catch (err) {
      await Promise.all([...served.values()].map((v) => v.close(0)));
      await audit.close();
      throw err;
    }

    let ledger: ReturnType<typeof openSqliteLedger>;
    try {
      ledger = openSqliteLedger(ledgerPath(loaded.dataDir), { clock: this.opts.clock, acceptNewLedger: this.opts.acceptNewLedger });
    } catch (err) {
      await Promise.all([...served.values()].map((v) => v.close(0)));
      throw err;
    }
    this.ledger = ledger;
    if (ledger.replaced !== undefined) {
      log.child("ledger").warning(`Started a new, empty budget ledger ${ledger.id} in ${ledger.file} (--accept-new-ledger); the one lost was ${describeMarker(ledger.replaced)}`);
    }
    if (ledger.reconciled.reservations > 0) {
      log.child("ledger").warning(`Released ${ledger.reconciled.reservations} reservation(s) (${ledger.reconciled.amount.toFixed(6)}) left by a process that stopped before settling`);
    }
    const created = Math.floor(Date.now() / 1000);
    const entries: PoolEntry[] = plan.entries.map((e) => {
      const versioned = served.get(e.model)!;
      const model = plan.models.find((m) => m.model.name === e.model)!.model;
      return { ...e, model, served: versioned, created };
    });
    const metrics = new ServerMetrics({ entries, ledger, prometheus: cfg.metrics.enabled, clock: this.opts.clock });
    const cacheOpts = cacheOptions(cfg.cache, loaded.dataDir, log, ledger, this.opts.cacheNow);
    try {
      this.cache = cacheOpts === undefined ? undefined : new ResponseCache(cacheOpts);
    } catch (err) {
      await Promise.all([...served.values()].map((v) => v.close(0)));
      ledger.close();
      await audit.close();
      throw err;
    }
    if (this.cache) {
      const cache = this.cache;
      metrics.watchCache(() => cache.stats());
    }
    this.pool = new ModelPool(entries, this.ledger, log, this.opts.clock, metrics, this.cache);
    const { buildApp } = await import("./app.js");
    this.app = buildApp({
      pool: this.pool,
      log,
      bodyLimitBytes: parseBytes(cfg.server.body_limit),
      isClosing: () => this.closing,
      timeouts: { bodyTimeoutMs: cfg.server.body_timeout_ms, headersTimeoutMs: cfg.server.headers_timeout_ms, keepAliveTimeoutMs: cfg.server.keep_alive_timeout_ms },
      requestTimeoutMs: cfg.server.request_timeout_ms,
      metrics,
      metricsPath: cfg.metrics.enabled ? cfg.metrics.path : undefined,
      versions: served,
      auth: this.auth,
      audit,
      auditContent: cfg.audit.include_content,
      info: { pid: process.pid, startedAt, startedMono: started, listen: () => this.listenUrl },
      https: this.tls === undefined ? undefined : { ...this.tls.context, ...this.tls.clientAuth },
    });
    if (this.tls !== undefined) {
      // A refused handshake (TLS 1.0/1.1, no shared cipher, no client certificate) closes the
      // socket; Node would say nothing.
      const tlsLog = log.child("server");
      this.app.server.on("tlsClientError", (err: NodeJS.ErrnoException, socket: { remoteAddress?: string }) =>
        tlsLog.debug(`TLS handshake refused from ${socket.remoteAddress ?? "?"}: ${err.code ?? err.message}`),
      );
    }
    try {
      await this.app.ready();
      await loading;
    } catch (err) {
      await Promise.all([...served.values()].map((v) => v.close(0)));
      await this.app.close();
      ledger.close();
      this.cache?.close();
      await audit.close();
      this.app = this.pool = this.ledger = this.auditLog = this.cache = undefined;
      throw err;
    }
    await this.app.listen({ host: cfg.server.host, port: cfg.server.port });
    log.child("server").info(`Listening on ${this.listenUrl} (${entries.length} pool entr${entries.length === 1 ? "y" : "ies"} on ${served.size} model(s), ready in ${Math.round(performance.now() - started)} ms)`);
    const pollMs = parseDuration(cfg.repository.poll_interval);
    if (pollMs > 0) {
      this.watcher = new RepositoryWatcher([...served.values()], { intervalMs: pollMs, autoActivate: cfg.repository.auto_activate, log: loaderLog, audit });
      await this.watcher.start();
    }
  }

  /**
   * Re-read security.tls's files (same paths as at start) and use them for new handshakes;
   * open connections keep theirs. Throws tls_invalid, keeping the current certificate, when the
   * new files would not start a server. Returns a line for the log.
   */
  reloadCertificates(): string {
    const settings = this.opts.loaded.config.security.tls;
    if (settings === undefined || this.tls === undefined || this.app === undefined) return "no security.tls: nothing to reload";
    const next = loadTls(settings);
    (this.app.server as unknown as TlsServer).setSecureContext(next.context);
    const before = this.tls;
    this.tls = next;
    return before.certificate.fingerprint256 === next.certificate.fingerprint256
      ? `TLS certificate unchanged (${describeCertificate(next)})`
      : `TLS certificate ${describeCertificate(next)} (was ${describeCertificate(before)})`;
  }

  /** Drain and stop; resolves when everything is down. Idempotent. */
  close(deadlineMs = 10_000): Promise<void> {
    this.closed ??= this.shutdown(deadlineMs);
    return this.closed;
  }

  private async shutdown(deadlineMs: number): Promise<void> {
    this.closing = true;
    const log = this.opts.log.child("server");
    log.info("Shutting down: draining in-flight requests");
    const deadline = Date.now() + deadlineMs;
    if (this.app) {
      const app = this.app;
      // At the drain deadline, requests still running are ended first (a stream gets an error
      // event and [DONE], the rest a 503 if their reply can still be written; their sequences are
      // cancelled), then the connections are cut, at once if those last writes hang.
      const cut = async () => {
        const ended = endOpenLifetimes(app.server, `the server is shutting down and its drain deadline of ${deadlineMs} ms has passed; the request was cut; retry on another instance`);
        await new Promise<void>((resolve) => {
          const grace = setTimeout(resolve, 500).unref();
          void ended.then(() => (clearTimeout(grace), resolve()));
        });
        app.server.closeAllConnections();
      };
      const timer = setTimeout(() => void cut(), Math.max(0, deadline - Date.now() - 1000)).unref();
      await app.close();
      clearTimeout(timer);
    }
    // A validation or switch the watcher runs ends when its model closes (its worker is stopped).
    const watching = this.watcher?.close();
    const left = Math.max(500, deadline - Date.now());
    await Promise.all([...this.served.values()].map((v) => v.close(left)));
    await watching;
    this.cgroups?.close();
    // After the listener and the workers: the last requests and switches are recorded, then flushed.
    await this.auditLog?.close();
    // Before the ledger: the savings of the last hits are written to it.
    this.cache?.close();
    this.ledger?.close();
    this.auth?.close();
    log.info("Stopped");
  }
}
