// The audit file on disk: the active file (audit.file), the segments it was rotated into
// (`<file>.<first seq, 12 digits>`, oldest first), and the retention checkpoint
// (`<file>.checkpoint`) that stands for the segments pruned before them. Reading and verifying
// the chain across all of them; shared by the server's AuditLog and `moltbot audit`.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { GENESIS, openRecord } from "./chain.js";
import { signCheckpoint } from "./keys.js";

export interface Checkpoint {
  /** The last pruned record: its seq and hash; the first kept record follows it. */
  seq: number;
  hash: string;
  /** When the pruning ran. */
  time: string;
  /** HMAC-SHA256 of seq, hash and time with the deployment key (audit-keys.sqlite). */
  mac: string;
}

export function segmentName(file: string, firstSeq: number): string {
  return `${file}.${String(firstSeq).padStart(12, "0")}`;
}

export function checkpointPath(file: string): string {
  return `${file}.checkpoint`;
}

/** Rotated segments, oldest first. */
export function segmentFiles(file: string): string[] {
  const dir = path.dirname(file);
  const base = path.basename(file);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.length === base.length + 13 && n.startsWith(`${base}.`) && /^\d{12}$/.test(n.slice(base.length + 1)))
    .sort()
    .map((n) => path.join(dir, n));
}

/** Every file holding records, in chain order: the segments, then the active file. */
export function chainFiles(file: string): string[] {
  const files = segmentFiles(file);
  if (existsSync(file)) files.push(file);
  return files;
}

export function readCheckpoint(file: string): Checkpoint | undefined {
  const p = checkpointPath(file);
  if (!existsSync(p)) return undefined;
  return JSON.parse(readFileSync(p, "utf8")) as Checkpoint;
}

export interface ChainRecordAt {
  file: string;
  /** 1-based line number in `file`. */
  line: number;
  seq: number;
  time: string;
  record: Record<string, unknown>;
}

/** Every readable record in chain order (unsound lines are skipped: `verify` names them). */
export function* readRecords(file: string): Generator<ChainRecordAt> {
  for (const f of chainFiles(file)) {
    const lines = readFileSync(f, "utf8").split("\n");
    for (let i = 0; i < lines.length; i++) {
      const text = lines[i]!;
      if (text === "") continue;
      const r = openRecord(text);
      if ("problem" in r) continue;
      yield { file: f, line: i + 1, seq: r.seq, time: r.time, record: r.record };
    }
  }
}

export interface VerifyReport {
  ok: boolean;
  records: number;
  files: number;
  firstSeq: number | undefined;
  lastSeq: number | undefined;
  /** The checkpoint the chain was verified from, when segments were pruned. */
  checkpoint: Checkpoint | undefined;
  /** The first fault: where and what. */
  problem?: { file: string; line: number; seq: number | undefined; reason: string };
}

/**
 * Walks the chain from the checkpoint (or genesis) through every segment and the active file:
 * each line must be sound, its seq one more than the one before, its prev the hash before it.
 * Stops at the first fault. `deploymentKey` undefined: the checkpoint's signature is not checked.
 */
export function verifyChain(file: string, deploymentKey: Buffer | undefined): VerifyReport {
  const files = chainFiles(file);
  let checkpoint: Checkpoint | undefined;
  const report: VerifyReport = { ok: true, records: 0, files: files.length, firstSeq: undefined, lastSeq: undefined, checkpoint: undefined };
  const fail = (f: string, line: number, seq: number | undefined, reason: string): VerifyReport => ({ ...report, ok: false, problem: { file: f, line, seq, reason } });
  try {
    checkpoint = readCheckpoint(file);
  } catch (err) {
    return fail(checkpointPath(file), 1, undefined, `checkpoint unreadable: ${(err as Error).message}`);
  }
  report.checkpoint = checkpoint;
  if (checkpoint !== undefined && deploymentKey !== undefined && signCheckpoint(deploymentKey, checkpoint) !== checkpoint.mac) {
    return fail(checkpointPath(file), 1, checkpoint.seq, "checkpoint signature does not match the deployment key (forged, altered, or the key store was replaced)");
  }
  let expectSeq = checkpoint === undefined ? 1 : checkpoint.seq + 1;
  let prev = checkpoint === undefined ? GENESIS : checkpoint.hash;
  for (const f of files) {
    const text = readFileSync(f, "utf8");
    const lines = text.split("\n");
    // The element after the last "\n": empty, or a torn write.
    const complete = lines.length - 1;
    for (let i = 0; i < complete; i++) {
      const lineNo = i + 1;
      const line = lines[i]!;
      const r = openRecord(line);
      if ("problem" in r) return fail(f, lineNo, seqOf(line), `record ${r.problem}`);
      // Records the checkpoint already stands for (a prune that stopped before deleting them).
      if (checkpoint !== undefined && r.seq <= checkpoint.seq) {
        if (r.seq === checkpoint.seq && r.hash !== checkpoint.hash) return fail(f, lineNo, r.seq, "does not match the checkpoint's hash");
        continue;
      }
      if (r.seq !== expectSeq) {
        const why = r.seq > expectSeq ? `record${r.seq - expectSeq > 1 ? `s ${expectSeq}..${r.seq - 1}` : ` ${expectSeq}`} missing (deleted or moved)` : `out of order (seq ${r.seq} after ${expectSeq - 1})`;
        return fail(f, lineNo, r.seq, `expected seq ${expectSeq}, found ${r.seq}: ${why}`);
      }
      if (r.prev !== prev) return fail(f, lineNo, r.seq, "prev does not match the hash of the record before it (a record before it was replaced)");
      report.firstSeq ??= r.seq;
      report.lastSeq = r.seq;
      report.records++;
      expectSeq++;
      prev = r.hash;
    }
    if (lines[complete] !== "") return fail(f, complete + 1, undefined, "torn last line (a write cut short by a crash); the next open of the log repairs it");
  }
  return report;
}

function seqOf(line: string): number | undefined {
  const m = /^\{"seq":(\d+)/.exec(line);
  return m === null ? undefined : Number(m[1]);
}
