// Reads the logger's files back (`moltbot logs`): the file and its rotated copies, in either
// format, line by line detected as text (`[2023-11-15 14:30:22] [INFO] [api] ...`) or JSON.
// A line without a timestamp (a stack trace someone printed into the file) continues the
// record before it. The logger appends in time order, so a time window is found by binary
// search on byte offsets (seek, skip to the next line, read its timestamp): a query over the
// last hour of a 1 GB log reads a few hundred kilobytes, not the gigabyte.
// Hand-written: log viewers on npm tail or parse whole files; none seeks by time.

import { closeSync, fstatSync, openSync, readSync, readdirSync, existsSync } from "node:fs";
import { basename, dirname, join } from "node:path";

/** Severity order of `--filter`; AUDIT is not a severity (see matchesLevel). */
export const LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] as const;
const RANK: Record<string, number> = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40, CRITICAL: 50 };

export interface RecordHead {
  /** Epoch milliseconds. */
  time: number;
  level: string;
  component: string;
}

/**
 * `--filter LEVEL` keeps that severity and above; AUDIT records (who did what) are no
 * severity, so a severity filter leaves them out and `--filter AUDIT` shows only them.
 * Without a filter every record is shown.
 */
export function matchesLevel(level: string, filter: string | undefined): boolean {
  if (filter === undefined) return true;
  if (filter === "AUDIT") return level === "AUDIT";
  const rank = RANK[level];
  return rank !== undefined && rank >= RANK[filter]!;
}

const TEXT_RE = /^\[(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)\] \[([A-Z]+)\] \[([^\]]*)\] ?/;
// The logger writes time, level and component first; other JSON producers take the slow path.
const JSON_RE = /^\{"time":"([^"]+)","level":"([A-Z]+)","component":"([^"\\]*)"/;

/** Parses record heads; text timestamps are local time unless `utc` (as the logger wrote them). */
export class LineParser {
  private lastStamp = "";
  private lastTime = 0;

  constructor(private readonly utc: boolean) {}

  /** The head of a record, or undefined for a continuation line. */
  head(line: string): RecordHead | undefined {
    const c = line.charCodeAt(0);
    if (c === 0x5b /* [ */) {
      const m = TEXT_RE.exec(line);
      if (m === null) return undefined;
      return { time: this.textTime(line.slice(1, 20), m), level: m[7]!, component: m[8]! };
    }
    if (c === 0x7b /* { */) {
      const m = JSON_RE.exec(line);
      if (m !== null) {
        const time = this.isoTime(m[1]!);
        return Number.isNaN(time) ? undefined : { time, level: m[2]!, component: m[3]! };
      }
      return this.jsonHead(line);
    }
    return undefined;
  }

  /** Milliseconds of a `--since` value written like a text timestamp (date and time, no zone). */
  localTime(y: number, mo: number, d: number, h: number, mi: number, s: number, ms = 0): number {
    return this.utc ? Date.UTC(y, mo - 1, d, h, mi, s, ms) : new Date(y, mo - 1, d, h, mi, s, ms).getTime();
  }

  /** A record's time as the text format writes it (local or UTC, whole seconds). */
  formatText(time: number): string {
    const d = new Date(time);
    const p = (n: number) => String(n).padStart(2, "0");
    return this.utc
      ? `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`
      : `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  private textTime(stamp: string, m: RegExpExecArray): number {
    // Consecutive lines mostly share their second: one Date per second, not per line.
    if (stamp !== this.lastStamp) {
      this.lastStamp = stamp;
      this.lastTime = this.localTime(+m[1]!, +m[2]!, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
    }
    return this.lastTime;
  }

  private isoTime(iso: string): number {
    if (iso !== this.lastStamp) {
      this.lastStamp = iso;
      this.lastTime = Date.parse(iso);
    }
    return this.lastTime;
  }

  private jsonHead(line: string): RecordHead | undefined {
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      return undefined;
    }
    if (typeof value !== "object" || value === null) return undefined;
    const r = value as Record<string, unknown>;
    const time = typeof r.time === "string" ? Date.parse(r.time) : typeof r.time === "number" ? r.time : NaN;
    if (Number.isNaN(time)) return undefined;
    return { time, level: typeof r.level === "string" ? r.level.toUpperCase() : "", component: typeof r.component === "string" ? r.component : "" };
  }
}

/** The file and its rotated copies that exist, oldest first: file.N .. file.1, file. */
export function logFiles(file: string): string[] {
  const dir = dirname(file);
  const base = basename(file);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    names = [];
  }
  const rotated = names
    .filter((n) => n.startsWith(`${base}.`) && /^\d+$/.test(n.slice(base.length + 1)))
    .map((n) => ({ n, i: Number(n.slice(base.length + 1)) }))
    .sort((a, b) => b.i - a.i)
    .map((x) => join(dir, x.n));
  return existsSync(file) ? [...rotated, file] : rotated;
}

interface Located {
  start: number;
  end: number;
  time: number;
}

const PROBE = 16 * 1024;

/** One open log file with random access by line, for the time search. */
export class LogFile {
  readonly fd: number;
  readonly size: number;
  readonly ino: number;

  constructor(
    readonly path: string,
    private readonly parser: LineParser,
    /** The file with this inode is read no further than this size (`follow` reads the rest). */
    upTo?: { ino: number; size: number },
  ) {
    this.fd = openSync(path, "r");
    const st = fstatSync(this.fd);
    this.ino = st.ino;
    this.size = upTo !== undefined && upTo.ino === st.ino ? Math.min(upTo.size, st.size) : st.size;
  }

  close(): void {
    closeSync(this.fd);
  }

  /** Time of the first and the last record; undefined when the file holds none. */
  span(): { first: number; last: number } | undefined {
    const first = this.recordAtOrAfter(0);
    if (first === undefined) return undefined;
    return { first: first.time, last: this.lastTime() ?? first.time };
  }

  /**
   * Offset of the first record whose time satisfies `pred` (false for earlier records, true
   * from some record on); `size` when none does. O(log size) probes of one line each.
   */
  seek(pred: (time: number) => boolean): number {
    let lo = 0;
    let hi = this.size;
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      const r = this.recordAtOrAfter(mid);
      if (r === undefined || pred(r.time)) hi = mid;
      // Every offset up to r.start leads to the same record: skip past it.
      else lo = r.start + 1;
    }
    return this.recordAtOrAfter(lo)?.start ?? this.size;
  }

  /** The first line starting at or after `offset` that has a timestamp. */
  private recordAtOrAfter(offset: number): Located | undefined {
    let pos = offset === 0 ? 0 : this.lineStartFrom(offset);
    while (pos < this.size) {
      const { line, end } = this.lineAt(pos);
      const head = this.parser.head(line);
      if (head !== undefined) return { start: pos, end, time: head.time };
      pos = end;
    }
    return undefined;
  }

  /** Start of the first line at or after `offset` (> 0): just past the next newline from offset-1. */
  private lineStartFrom(offset: number): number {
    const buf = Buffer.allocUnsafe(PROBE);
    let pos = offset - 1;
    while (pos < this.size) {
      const n = readSync(this.fd, buf, 0, Math.min(PROBE, this.size - pos), pos);
      if (n <= 0) break;
      const i = buf.subarray(0, n).indexOf(0x0a);
      if (i >= 0) return pos + i + 1;
      pos += n;
    }
    return this.size;
  }

  /** The line starting at `pos` (without its newline) and the offset after it. */
  private lineAt(pos: number): { line: string; end: number } {
    const parts: Buffer[] = [];
    let at = pos;
    while (at < this.size) {
      const buf = Buffer.allocUnsafe(Math.min(PROBE, this.size - at));
      const n = readSync(this.fd, buf, 0, buf.length, at);
      if (n <= 0) break;
      const i = buf.subarray(0, n).indexOf(0x0a);
      if (i >= 0) {
        parts.push(buf.subarray(0, i));
        return { line: Buffer.concat(parts).toString("utf8"), end: at + i + 1 };
      }
      parts.push(buf.subarray(0, n));
      at += n;
    }
    return { line: Buffer.concat(parts).toString("utf8"), end: this.size };
  }

  /** Time of the last record: lines read backwards from the end, a block at a time. */
  private lastTime(): number | undefined {
    let end = this.size;
    let tail = Buffer.alloc(0);
    while (end > 0) {
      const start = Math.max(0, end - 64 * 1024);
      const buf = Buffer.allocUnsafe(end - start);
      readSync(this.fd, buf, 0, buf.length, start);
      tail = Buffer.concat([buf, tail]);
      const lines = tail.toString("utf8").split("\n");
      // The first piece may be a cut line unless the block reached the file's start.
      for (let i = lines.length - 1; i >= (start === 0 ? 0 : 1); i--) {
        const head = this.parser.head(lines[i]!);
        if (head !== undefined) return head.time;
      }
      end = start;
    }
    return undefined;
  }
}

/** Calls `onLine` for each line of `fd` in [start, end), reading large blocks. */
export function forEachLine(fd: number, start: number, end: number, onLine: (line: string) => void): void {
  const buf = Buffer.allocUnsafe(1 << 20);
  // Bytes after the last newline, kept as bytes so a multi-byte character is never cut.
  let carry = Buffer.alloc(0);
  let pos = start;
  while (pos < end) {
    const n = readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
    if (n <= 0) break;
    pos += n;
    const last = buf.subarray(0, n).lastIndexOf(0x0a);
    if (last < 0) {
      carry = Buffer.concat([carry, buf.subarray(0, n)]);
      continue;
    }
    const text = carry.length > 0 ? Buffer.concat([carry, buf.subarray(0, last)]).toString("utf8") : buf.toString("utf8", 0, last);
    carry = Buffer.from(buf.subarray(last + 1, n));
    let from = 0;
    for (;;) {
      const i = text.indexOf("\n", from);
      if (i < 0) break;
      onLine(text.slice(from, i));
      from = i + 1;
    }
    onLine(text.slice(from));
  }
  if (carry.length > 0) onLine(carry.toString("utf8"));
}

/** Undo the text format's escaping of a message (`\n`, `\r`, `\\`, `\u001b`). */
export function unescapeText(text: string): string {
  return text.replace(/\\(n|r|\\|u[0-9a-f]{4})/g, (_m, c: string) =>
    c === "n" ? "\n" : c === "r" ? "\r" : c === "\\" ? "\\" : String.fromCharCode(parseInt(c.slice(1), 16)),
  );
}
