// What survives a restart about model versions: the active and previous version of each model
// (an activation holds across restarts; MODEL_VERSION still wins at start) and the last
// validation report of each version (`moltbot models list`). One small JSON file under
// data_dir, replaced atomically (write-file-atomic: temp file, fsync, rename), so a crash
// or kill mid-write leaves the old file or the new one, never half of either.
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import writeFileAtomic from "write-file-atomic";
import type { ValidationReport } from "./validation.js";

export interface ModelRecord {
  active?: string;
  previous?: string;
  /** By version. */
  validations?: Record<string, ValidationReport>;
}

interface StoreFile {
  models: Record<string, ModelRecord>;
}

export const VERSION_STORE_FILE = "model-versions.json";

export class VersionStore {
  private data: StoreFile = { models: {} };
  /** Writes run one after another, each with the whole state at its time. */
  private writing: Promise<void> = Promise.resolve();

  private constructor(readonly file: string) {}

  /** Opens the store in `dataDir`; an unreadable or malformed file is reported and replaced on the next write. */
  static open(dataDir: string, warn: (message: string) => void): VersionStore {
    mkdirSync(dataDir, { recursive: true });
    const store = new VersionStore(path.join(dataDir, VERSION_STORE_FILE));
    let text: string | undefined;
    try {
      text = readFileSync(store.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") warn(`${store.file}: cannot read (${(err as Error).message}); starting from the highest versions`);
    }
    if (text !== undefined) {
      try {
        const parsed = JSON.parse(text) as Partial<StoreFile>;
        if (typeof parsed.models !== "object" || parsed.models === null) throw new Error("no \"models\" object");
        store.data = { models: parsed.models };
      } catch (err) {
        warn(`${store.file}: malformed (${(err as Error).message}); ignoring it, it is rewritten at the next activation`);
      }
    }
    return store;
  }

  get(model: string): ModelRecord {
    return this.data.models[model] ?? {};
  }

  /** Records a switch and persists it; resolves once it is on disk. */
  setActive(model: string, active: string, previous: string | undefined): Promise<void> {
    const r = (this.data.models[model] ??= {});
    r.active = active;
    if (previous === undefined) delete r.previous;
    else r.previous = previous;
    return this.persist();
  }

  setValidation(model: string, report: ValidationReport): Promise<void> {
    const r = (this.data.models[model] ??= {});
    (r.validations ??= {})[report.version] = report;
    return this.persist();
  }

  /** Resolves when every write asked so far is done (close). */
  flushed(): Promise<void> {
    return this.writing;
  }

  private persist(): Promise<void> {
    const next = this.writing.then(() => writeFileAtomic(this.file, `${JSON.stringify(this.data, null, 2)}\n`, { mode: 0o600 }));
    this.writing = next.catch(() => undefined);
    return next;
  }
}
