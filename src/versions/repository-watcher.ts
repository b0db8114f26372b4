// `repository.poll_interval`: looks for version folders that appeared since the last look. A
// new version is validated in a worker of its own beside the serving one (its report shows in
// `moltbot models list`); with `repository.auto_activate` a version newer than the active one
// is activated instead (which validates it first, and leaves the serving version alone when
// it fails). One look at a time; a look finds each version once.
import type { AuditSink } from "../audit/events.js";
import type { Logger } from "../observe/logger.js";
import { compareVersions } from "../repository/versions.js";
import type { VersionedModel } from "./versioned-model.js";

const WHO = "the repository watcher";

export interface RepositoryWatcherOptions {
  intervalMs: number;
  autoActivate: boolean;
  log: Logger;
  /** Its activations and validations are admin actions too (user "repository-watcher"). */
  audit?: AuditSink | undefined;
}

export class RepositoryWatcher {
  private readonly seen = new Map<VersionedModel, Set<string>>();
  /** The last refusal logged per "model version", so a version retried every look is not logged every time. */
  private readonly reported = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private looking: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly models: readonly VersionedModel[],
    private readonly opts: RepositoryWatcherOptions,
  ) {}

  /** Takes the versions present now as known, then looks every interval. */
  async start(): Promise<void> {
    for (const m of this.models) this.seen.set(m, new Set(await m.newVersions(new Set())));
    this.timer = setInterval(() => {
      this.looking = this.looking.then(() => this.look());
    }, this.opts.intervalMs);
    this.timer.unref();
  }

  private async look(): Promise<void> {
    for (const model of this.models) {
      if (this.closed) return;
      const seen = this.seen.get(model)!;
      let found: string[];
      try {
        found = await model.newVersions(seen);
      } catch (err) {
        this.opts.log.warning(`Cannot list the versions of ${model.name}: ${(err as Error).message}`);
        continue;
      }
      for (const version of found) {
        if (this.closed) return;
        seen.add(version);
        const activate = this.opts.autoActivate && compareVersions(version, model.version) > 0;
        this.opts.log.info(`New version found: ${model.name} ${version}; ${activate ? "activating it (repository.auto_activate)" : "validating it"}`);
        const action = activate ? "model.activate" : "model.validate";
        const record = (outcome: string) => this.opts.audit?.record({ action, user: "repository-watcher", target: `${model.name} ${version}`, outcome, detail: activate ? "repository.auto_activate" : "repository.poll_interval" });
        try {
          if (activate) {
            await model.activate(version, WHO);
            record("ok");
          } else {
            const report = await model.validate(version, WHO);
            record(report.passed ? "ok" : "validation_failed");
            this.opts.log[report.passed ? "info" : "warning"](`${model.name} ${version} ${report.passed ? "passed" : "failed"} validation (${report.checks.filter((c) => c.passed).length}/${report.checks.length} checks); activate it with: moltbot models activate ${model.name} ${version}`);
          }
        } catch (err) {
          const code = (err as { code?: string }).code;
          const message = `${model.name} ${version} was not ${activate ? "activated" : "validated"}: ${(err as Error).message}`;
          // Looked at again next time: a switch under way ends, and a version that cannot load
          // may be one still being copied in (truncated weights); its refusal is logged once.
          if (code === "switch_in_progress" || code === "version_invalid") seen.delete(version);
          if (this.reported.get(`${model.name} ${version}`) !== message) {
            this.opts.log.warning(message);
            record(code ?? "internal_error");
          }
          this.reported.set(`${model.name} ${version}`, message);
        }
      }
    }
  }

  /** Stops looking; waits for a look under way (its switch or validation) to end. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.looking;
  }
}
