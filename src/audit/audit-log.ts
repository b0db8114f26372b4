// The audit log's writer (PRODUCT.md 4.3): every event is one hash-chained JSON line in
// audit.file (./chain.ts) and one AUDIT line in the main log.
//
// record() is the hot path: it stores the event and its time in two arrays and writes the
// AUDIT line; nothing else. Every audit.fsync_interval a batch is written: under a lock file
// (proper-lockfile, `<file>.lock`) the tail of the chain is re-read if another process (a CLI
// command) appended or rotated since, users are turned into pseudonyms (./keys.ts), the lines
// are written with one write and fsynced, and the new head is noted in the key store. A crash
// loses at most the events of the last interval (and of a batch being written); a torn last
// line is moved to `<file>.torn` and cut off at the next open, so verify of everything before
// it still holds. A missing, emptied or cut-short file that the key store says held records
// stops the open (fail closed).
//
// The active file is rotated into a segment (`<file>.<first seq>`, ./segments.ts) when a
// batch starts a new UTC day; with audit.retention, segments whose last record is older are
// deleted behind a signed checkpoint, from which verify starts.
import { closeSync, fstatSync, fsyncSync, ftruncateSync, mkdirSync, openSync, renameSync, statSync, unlinkSync, writeSync, appendFileSync } from "node:fs";
import path from "node:path";
import { lock } from "proper-lockfile";
import writeFileAtomic from "write-file-atomic";
import { MoltbotError } from "../errors.js";
import type { Logger } from "../observe/logger.js";
import { GENESIS, openRecord, sealRecord } from "./chain.js";
import type { AuditAction, AuditEvent, AuditSink } from "./events.js";
import { fileEnds, readBytes } from "./file-tail.js";
import { AuditKeys, signCheckpoint, type ChainHead } from "./keys.js";
import { checkpointPath, readCheckpoint, segmentFiles, segmentName, type Checkpoint } from "./segments.js";

export interface AuditLogOptions {
  /** audit.file */
  file: string;
  /** The key store (<data_dir>/audit-keys.sqlite). */
  keysFile: string;
  /** audit.fsync_interval in ms: how often a batch is written and fsynced (0: at every record's next tick). */
  fsyncIntervalMs: number;
  /** audit.include_content: keep prompt and completion text. */
  includeContent: boolean;
  /** audit.retention in ms; undefined: keep everything. */
  retentionMs: number | undefined;
  /** The main log: AUDIT lines and the writer's own warnings. */
  log: Logger;
  clock?: () => Date;
}

const COMPONENT: Record<AuditAction, string> = {
  request: "api",
  "model.activate": "model",
  "model.rollback": "model",
  "model.validate": "model",
  "budget.reset": "budget",
  "token.create": "auth",
  "token.revoke": "auth",
  "token.reset-store": "auth",
  "config.reload": "config",
  "audit.erase": "audit",
};

const VERB: Record<AuditAction, string> = {
  request: "accessed",
  "model.activate": "activated",
  "model.rollback": "rolled back",
  "model.validate": "validated",
  "budget.reset": "reset",
  "token.create": "created",
  "token.revoke": "revoked",
  "token.reset-store": "accepted as the API key store",
  "config.reload": "reloaded",
  "audit.erase": "erased",
};

const utcDay = (iso: string): string => iso.slice(0, 10);

export class AuditLog implements AuditSink {
  private readonly keys: AuditKeys;
  private readonly clock: () => Date;
  private readonly lines: Map<string, Logger>;
  private pending: AuditEvent[] = [];
  private times: number[] = [];
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private failing = false;
  // The chain's tail as this process last saw it on disk.
  private fd: number | undefined;
  private ino = 0;
  private size = 0;
  private seq = 0;
  private hash = GENESIS;
  private activeFirstSeq = 0;
  private activeDay: string | undefined;

  private constructor(private readonly opts: AuditLogOptions) {
    this.clock = opts.clock ?? (() => new Date());
    this.keys = new AuditKeys(opts.keysFile);
    this.lines = new Map(Object.values(COMPONENT).map((c) => [c, opts.log.child(c)]));
  }

  /** Opens the file (repairing a torn tail), checks it against the key store, starts the batch timer. */
  static async open(opts: AuditLogOptions): Promise<AuditLog> {
    mkdirSync(path.dirname(opts.file), { recursive: true, mode: 0o750 });
    const audit = new AuditLog(opts);
    try {
      await audit.locked(() => {
        audit.loadTail();
        audit.checkHead();
      });
    } catch (err) {
      audit.closeFiles();
      throw err;
    }
    audit.timer = setInterval(() => void audit.flush(), Math.max(1, opts.fsyncIntervalMs));
    audit.timer.unref();
    return audit;
  }

  get file(): string {
    return this.opts.file;
  }

  record(event: AuditEvent): void {
    if (this.closed) {
      this.opts.log.child("audit").error(`Audit event after close, not recorded: ${event.action}`);
      return;
    }
    this.pending.push(event);
    this.times.push(this.clock().getTime());
    try {
      this.mainLine(event);
    } catch {
      // The main log failing must not fail the request; the audit file still gets the event.
    }
  }

  /** The seed's line: `User 'admin' accessed /infer with method POST`, `Model demo v2.0 activated by user 'ops'`. */
  private mainLine(e: AuditEvent): void {
    const log = this.lines.get(COMPONENT[e.action])!;
    if (e.action === "request") {
      log.audit(`User '${e.user}' accessed ${e.route ?? "?"} with method ${e.method ?? "?"}`, { status: e.status, request_id: e.request_id, model: e.model, version: e.version });
      return;
    }
    const what = e.action === "config.reload" ? "Configuration" : e.action.startsWith("model.") ? "Model" : e.action === "budget.reset" ? "Budget of" : e.action === "audit.erase" ? "Audit subject" : "Token";
    log.audit(`${what}${e.target === undefined ? "" : ` ${e.target}`} ${VERB[e.action]} by user '${e.user}'`, { outcome: e.outcome, detail: e.detail, request_id: e.request_id });
  }

  /**
   * Crypto-shredding: forget `user`'s key so their records no longer lead to them, and record
   * the erasure (by `operator`, naming the user only by the pseudonym that is now dead).
   */
  erase(user: string, operator: string): boolean {
    const subject = this.keys.lookup(user);
    const erased = this.keys.erase(user);
    this.record({ action: "audit.erase", user: operator, target: subject === undefined ? "(no key)" : `subject:${subject}`, outcome: erased ? "ok" : "no_key" });
    return erased;
  }

  /** Write what is pending now; resolves when it is on disk (or the write failed and was logged). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.pending.length === 0 || this.fd === undefined) return;
    this.flushing = this.writeBatch().finally(() => {
      this.flushing = undefined;
    });
    await this.flushing;
  }

  /** Flush and close; later records are refused. */
  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    await this.flush();
    this.closed = true;
    if (this.pending.length > 0) this.opts.log.child("audit").critical(`${this.pending.length} audit event(s) could not be written before close and are lost (see the error above)`);
    this.closeFiles();
  }

  private closeFiles(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.keys.close();
  }

  private async locked<T>(fn: () => T): Promise<T> {
    const release = await lock(this.opts.file, {
      lockfilePath: `${this.opts.file}.lock`,
      realpath: false,
      // A lock is held only while one batch is written (milliseconds), refreshed every 1.5 s;
      // one left by a killed process is taken over after 3 s (a restart waits that long at most).
      stale: 3_000,
      retries: { retries: 200, minTimeout: 5, maxTimeout: 50, factor: 1.3 },
      onCompromised: (err) => this.opts.log.child("audit").error(`Audit lock lost while writing: ${err.message}`),
    });
    try {
      return fn();
    } finally {
      // The batch is written by now: a failed release must not have it written again.
      await release().catch((err: Error) => this.opts.log.child("audit").warning(`Audit lock release failed: ${err.message}`));
    }
  }

  private async writeBatch(): Promise<void> {
    const events = this.pending;
    const times = this.times;
    this.pending = [];
    this.times = [];
    try {
      await this.locked(() => this.append(events, times));
      if (this.failing) this.opts.log.child("audit").info("Audit log writes resumed");
      this.failing = false;
    } catch (err) {
      // Kept for the next batch, in order; the chain on disk is unchanged (append cuts a short write back).
      this.pending = events.concat(this.pending);
      this.times = times.concat(this.times);
      if (!this.failing) this.opts.log.child("audit").error(`Audit log write failed, ${this.pending.length} event(s) held in memory and retried: ${(err as Error).message}`);
      this.failing = true;
    }
  }

  /** Under the lock: bring the tail up to date, rotate if a new day began, write, fsync. */
  private append(events: AuditEvent[], times: number[]): void {
    this.syncTail();
    this.keys.refresh();
    // The file removed or cut while serving: never start a second chain over the first.
    this.assertReachesHead();
    const firstTime = new Date(times[0]!).toISOString();
    if (this.activeDay !== undefined && utcDay(firstTime) !== this.activeDay && this.size > 0) this.rotate();
    const startSeq = this.seq;
    const startHash = this.hash;
    let text = "";
    let seq = this.seq;
    let hash = this.hash;
    for (let i = 0; i < events.length; i++) {
      const e = events[i]!;
      seq++;
      const body: Record<string, unknown> = { seq, time: new Date(times[i]!).toISOString(), prev: hash, action: e.action, subject: this.keys.pseudonym(e.user) };
      // A plain copy loop: object rest/spread cost about twice as much here (bench/audit-record.ts).
      for (const key in e) {
        if (key === "action" || key === "user" || key === "content") continue;
        const value = e[key as keyof AuditEvent];
        if (value !== undefined) body[key] = value;
      }
      if (this.opts.includeContent && e.content !== undefined) body.content = e.content;
      const sealed = sealRecord(body);
      text += sealed.line + "\n";
      hash = sealed.hash;
    }
    const buf = Buffer.from(text);
    const fd = this.fd!;
    const at = this.size;
    try {
      let done = 0;
      while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
      fsyncSync(fd);
    } catch (err) {
      // Never leave a half-written batch: cut back to where it began.
      try {
        ftruncateSync(fd, at);
      } catch {
        // The next open finds and repairs the torn tail.
      }
      this.seq = startSeq;
      this.hash = startHash;
      throw err;
    }
    if (this.activeDay === undefined) {
      this.activeDay = utcDay(firstTime);
      this.activeFirstSeq = startSeq + 1;
    }
    this.size += buf.length;
    this.seq = seq;
    this.hash = hash;
    this.keys.setHead({ seq, hash });
  }

  /** Another process appended or rotated since our last write: read the tail again. */
  private syncTail(): void {
    let st;
    try {
      st = statSync(this.opts.file);
    } catch {
      st = undefined;
    }
    if (st !== undefined && st.ino === this.ino && st.size === this.size) return;
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.loadTail();
  }

  /** Reads the chain's tail (the active file, else the last segment, else the checkpoint), repairing a torn last line. */
  private loadTail(): void {
    const file = this.opts.file;
    const fd = openSync(file, "a+", 0o640);
    this.fd = fd;
    let ends = fileEnds(fd);
    if (ends.tornAt !== undefined) {
      const torn = readBytes(fd, ends.tornAt, ends.size);
      appendFileSync(`${file}.torn`, JSON.stringify({ time: this.clock().toISOString(), offset: ends.tornAt, bytes: torn }) + "\n", { mode: 0o640 });
      ftruncateSync(fd, ends.tornAt);
      fsyncSync(fd);
      this.opts.log.child("audit").warning(`Audit log ${file} ended in a torn record (${ends.size - ends.tornAt} bytes, a write cut short by a crash): moved to ${file}.torn and cut off; the records before it are intact`);
      ends = fileEnds(fd);
    }
    this.ino = fstatSync(fd).ino;
    this.size = ends.size;
    this.activeDay = undefined;
    if (ends.last !== undefined) {
      const last = this.sound(ends.last, file);
      const first = this.sound(ends.first!, file);
      this.seq = last.seq;
      this.hash = last.hash;
      this.activeFirstSeq = first.seq;
      this.activeDay = utcDay(first.time);
      return;
    }
    const segments = segmentFiles(file);
    const lastSegment = segments.at(-1);
    if (lastSegment !== undefined) {
      const sfd = openSync(lastSegment, "r");
      try {
        const segEnds = fileEnds(sfd);
        if (segEnds.last === undefined) throw new MoltbotError("audit_log_invalid", `audit segment ${lastSegment} holds no complete record; run \`moltbot audit verify\``);
        const last = this.sound(segEnds.last, lastSegment);
        this.seq = last.seq;
        this.hash = last.hash;
      } finally {
        closeSync(sfd);
      }
      return;
    }
    const cp = readCheckpoint(file);
    this.seq = cp?.seq ?? 0;
    this.hash = cp?.hash ?? GENESIS;
  }

  private sound(line: string, file: string): { seq: number; hash: string; time: string } {
    const r = openRecord(line);
    if ("problem" in r) throw new MoltbotError("audit_log_invalid", `audit log ${file}: the last or first record is unreadable (${r.problem}); run \`moltbot audit verify\` to find the first fault`);
    return r;
  }

  /** Fail closed: the key store remembers the chain's head; the files must reach it. */
  private checkHead(): void {
    const head = this.assertReachesHead();
    if (head === undefined && this.seq > 0 && this.keys.created) {
      this.opts.log.child("audit").warning(`Audit key store ${this.keys.file} was missing and is created anew: users in the ${this.seq} existing record(s) can no longer be resolved, and a retention checkpoint no longer verifies`);
    }
    if (this.seq > 0) this.keys.setHead({ seq: this.seq, hash: this.hash });
  }

  private assertReachesHead(): ChainHead | undefined {
    const head = this.keys.head();
    const file = this.opts.file;
    if (head !== undefined) {
      if (this.seq < head.seq) {
        const state = this.seq === 0 ? "is missing or empty" : `ends at record ${this.seq}`;
        throw new MoltbotError(
          "audit_log_invalid",
          `audit log ${file} ${state}, but ${this.keys.file} records that it reached record ${head.seq}: records were deleted or the file replaced. Restore it from a backup (or, to start a new chain knowingly, move ${this.keys.file} away: every pseudonym in the old records is then lost)`,
        );
      }
      if (this.seq === head.seq && this.hash !== head.hash) {
        throw new MoltbotError("audit_log_invalid", `audit log ${file}: record ${head.seq} is not the one ${this.keys.file} recorded (the file was replaced); run \`moltbot audit verify\``);
      }
    }
    return head;
  }

  /** Rotate the active file into a segment; then prune by retention. */
  private rotate(): void {
    const file = this.opts.file;
    closeSync(this.fd!);
    renameSync(file, segmentName(file, this.activeFirstSeq));
    const fd = openSync(file, "a+", 0o640);
    this.fd = fd;
    this.ino = fstatSync(fd).ino;
    this.size = 0;
    this.activeDay = undefined;
    fsyncDir(path.dirname(file));
    if (this.opts.retentionMs !== undefined) this.prune(this.opts.retentionMs);
  }

  /** Deletes whole segments whose last record is older than the retention, behind a signed checkpoint. */
  private prune(retentionMs: number): void {
    const file = this.opts.file;
    const cutoff = this.clock().getTime() - retentionMs;
    const doomed: string[] = [];
    let lastPruned: { seq: number; hash: string } | undefined;
    for (const seg of segmentFiles(file)) {
      const fd = openSync(seg, "r");
      let last;
      try {
        const ends = fileEnds(fd);
        last = ends.last === undefined ? undefined : openRecord(ends.last);
      } finally {
        closeSync(fd);
      }
      if (last === undefined || "problem" in last || Date.parse(last.time) >= cutoff) break;
      doomed.push(seg);
      lastPruned = last;
    }
    if (lastPruned === undefined) return;
    const fields = { seq: lastPruned.seq, hash: lastPruned.hash, time: this.clock().toISOString() };
    const checkpoint: Checkpoint = { ...fields, mac: signCheckpoint(this.keys.deploymentKey(), fields) };
    // The checkpoint is durable before any segment goes: a crash between leaves segments verify skips.
    writeFileAtomic.sync(checkpointPath(file), JSON.stringify(checkpoint) + "\n", { mode: 0o640 });
    for (const seg of doomed) unlinkSync(seg);
    this.opts.log.child("audit").info(`Pruned ${doomed.length} audit segment(s) older than the retention, up to record ${lastPruned.seq}, behind a signed checkpoint`);
  }
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not every filesystem lets a directory be fsynced; the rename is still atomic.
  }
}

