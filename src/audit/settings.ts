// The audit log's settings from a loaded config (the server and `moltbot audit` open it alike).
import path from "node:path";
import type { LoadedConfig } from "../config/load.js";
import { parseDuration } from "../config/units.js";
import { createLogger, loggerOptions, type Logger } from "../observe/logger.js";
import { AuditLog, type AuditLogOptions } from "./audit-log.js";
import type { AuditEvent } from "./events.js";
import { keysPath } from "./keys.js";

/** The audit log's settings from the config: audit.file (default <data_dir>/audit.log), the key store beside the ledger. */
export function auditOptions(loaded: LoadedConfig, log: Logger, clock?: () => Date): AuditLogOptions {
  const a = loaded.config.audit;
  return {
    file: a.file ?? path.join(loaded.dataDir, "audit.log"),
    keysFile: keysPath(loaded.dataDir),
    fsyncIntervalMs: parseDuration(a.fsync_interval),
    includeContent: a.include_content,
    retentionMs: a.retention === undefined ? undefined : parseDuration(a.retention),
    log,
    clock,
  };
}

/**
 * Records an admin action a CLI command took itself (budget reset, token create/revoke) in the
 * same chain the server writes (under the lock file), with its AUDIT line in log.file if set.
 */
export async function recordCliAction(loaded: LoadedConfig, event: AuditEvent): Promise<void> {
  const log = createLogger({ ...loggerOptions(loaded.config.log), stdout: false });
  try {
    const audit = await AuditLog.open(auditOptions(loaded, log));
    audit.record(event);
    await audit.close();
  } finally {
    log.close();
  }
}
