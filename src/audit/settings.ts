// The audit log's settings from a loaded config (the server and `moltbot audit` open it alike).
import path from "node:path";
import type { LoadedConfig } from "../config/load.js";
import { parseDuration } from "../config/units.js";
import type { Logger } from "../observe/logger.js";
import type { AuditLogOptions } from "./audit-log.js";
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
