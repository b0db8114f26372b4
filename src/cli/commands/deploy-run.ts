// `moltbot deploy`, the implementation: loaded by commands/deploy.ts only when the command runs.
import path from "node:path";
import type { ArgumentsCamelCase } from "yargs";
import { loadConfig } from "../../config/load.js";
import { ensureDemoModel } from "../../demo/ensure-demo-model.js";
import { resolveThreads } from "../../engine/threads.js";
import { createLogger, loggerOptions } from "../../observe/logger.js";
import { ConfigReloader } from "../../server/reload.js";
import { MoltbotServer } from "../../server/server.js";
import type { DeployArgs } from "./deploy.js";

export async function deploy(args: ArgumentsCamelCase<DeployArgs>): Promise<void> {
  if (args.port !== undefined && (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535)) {
    throw new Error(`--port: expected an integer 0..65535, got ${args.port}`);
  }
  if (args.threads !== undefined && (!Number.isInteger(args.threads) || args.threads < 1)) {
    throw new Error(`--threads: expected an integer >= 1, got ${args.threads}`);
  }
  const loadOptions = {
    file: args.config,
    env: process.env,
    overrides: {
      server: { port: args.port, host: args.host },
      threads: args.threads,
      engine: { backend: args.gpu === "off" ? ("cpu" as const) : args.gpu },
      model_path: args["model-path"],
      log: { level: args["log-level"], format: args["log-format"] },
    },
  };
  const loaded = loadConfig(loadOptions);
  const cfg = loaded.config;
  const log = createLogger(loggerOptions(cfg.log));
  // logrotate's postrotate `kill -USR1`: the file was renamed away, write to a new one at the
  // path. Installed at once: without a listener, SIGUSR1 starts Node's inspector.
  process.on("SIGUSR1", () => {
    try {
      log.reopen();
      log.child("server").info("Log file reopened (SIGUSR1)");
    } catch (err) {
      log.child("server").error(`Cannot reopen the log file, still writing to the old one: ${(err as Error).message}`);
    }
  });
  // SIGHUP's default action kills the process: take it over before the (long) start, and
  // reload once serving if it came during the start.
  let reloader: ConfigReloader | undefined;
  let reloadPending = false;
  let signals = 0;
  process.on("SIGHUP", () => {
    if (signals > 0) return; // stopping
    const target = loaded.file ?? "(no config file)";
    if (reloader === undefined) {
      reloadPending = true;
      log.child("server").info(`SIGHUP received while starting: will re-read ${target} once serving`);
      return;
    }
    log.child("server").info(`SIGHUP received: re-reading ${target}`);
    reloader.reload();
  });
  let modelPath = cfg.model_path;
  if (modelPath === undefined) {
    const demoLog = log.child("model_loader");
    const gguf = await ensureDemoModel({ log: (m) => demoLog.info(m) });
    modelPath = path.dirname(gguf);
  }
  const engine = args.engine ?? cfg.worker.engine;
  const server = new MoltbotServer({
    loaded,
    modelPath,
    log,
    engine,
    threads: resolveThreads(cfg.threads, engine),
    modelVersion: process.env.MODEL_VERSION,
    acceptNewLedger: args["accept-new-ledger"] === true,
  });
  try {
    await server.start();
  } catch (err) {
    log.close();
    throw err;
  }
  // The file as resolved at start; flags and environment keep their precedence over it.
  reloader = new ConfigReloader({ load: { ...loadOptions, file: loaded.file }, started: cfg, pool: server.models, repository: server.repository, log, certificates: cfg.security.tls === undefined ? undefined : server, audit: server.audit });
  if (reloadPending) reloader.reload();

  const stop = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      log.child("server").warning(`${signal} again: exiting without waiting`);
      process.exit(1);
    }
    log.child("server").info(`${signal} received`);
    const drainMs = Math.min(cfg.worker.drain_timeout_ms, 9_000);
    server
      .close(drainMs)
      .then(() => log.close())
      .then(() => process.exit(0), () => process.exit(1));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}
