// `moltbot logs` behind the flags: pick the records of a time window out of the log file and
// its rotated copies (oldest first, so the output is in time order: one process appends
// each file in order), filter them, print them as written or as JSON lines, and follow the
// file across rotations (rename: the inode at the path changes; truncation: it shrinks).

import { closeSync, fstatSync, openSync, readSync, statSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
import { LineParser, LogFile, forEachLine, logFiles, matchesLevel, unescapeText, type RecordHead } from "./log-reader.js";

export interface LogQuery {
  /** Epoch ms, inclusive. */
  since?: number | undefined;
  /** Epoch ms, inclusive. */
  until?: number | undefined;
  /** DEBUG..CRITICAL (that level and above) or AUDIT (audit records only). */
  level?: string | undefined;
  /** Fixed text, case-sensitive, anywhere in the record (continuation lines included). */
  grep?: string | undefined;
  components?: string[] | undefined;
  json: boolean;
}

/** A file read position: the query reads the file with this inode up to `size`, no further. */
export interface ReadMark {
  ino: number;
  size: number;
}

/** Buffers output and writes it to stdout in large pieces. */
export class Output {
  private parts: string[] = [];
  private bytes = 0;

  constructor(private readonly sink: (chunk: string | Buffer) => void = (c) => process.stdout.write(c)) {}

  /** Bytes as they are (the sink keeps the buffer: pass one that is not reused). */
  writeBytes(bytes: Buffer): void {
    this.flush();
    this.sink(bytes);
  }

  write(text: string): void {
    this.parts.push(text);
    this.bytes += text.length;
    if (this.bytes >= 256 * 1024) this.flush();
  }

  flush(): void {
    if (this.parts.length === 0) return;
    const text = this.parts.join("");
    this.parts = [];
    this.bytes = 0;
    this.sink(text);
  }
}

const TEXT_HEAD = /^\[[^\]]*\] \[[^\]]*\] \[[^\]]*\] ?/;

/** Groups lines into records (a head and its continuation lines), filters and prints them. */
export class RecordPrinter {
  private head: RecordHead | undefined;
  private lines: string[] = [];
  /** Whether the last record was printed: its late continuation lines follow it. */
  private shownLast: boolean;

  constructor(
    private readonly query: LogQuery,
    private readonly parser: LineParser,
    private readonly out: Output,
  ) {
    // Lines before the first record are shown only when nothing is filtered.
    this.shownLast = !this.filters();
  }

  /** No per-record work needed: the window's bytes can be copied as they are. */
  get passThrough(): boolean {
    return !this.filters() && !this.query.json;
  }

  line(line: string): void {
    const head = this.parser.head(line);
    if (head === undefined) {
      if (this.head !== undefined) this.lines.push(line);
      else if (this.shownLast) this.out.write(this.query.json ? JSON.stringify({ msg: line }) + "\n" : line + "\n");
      return;
    }
    this.flush();
    this.head = head;
    this.lines.push(line);
  }

  /** Print or drop the pending record. */
  flush(): void {
    const head = this.head;
    if (head === undefined) return;
    const lines = this.lines;
    this.head = undefined;
    this.lines = [];
    const q = this.query;
    let keep = matchesLevel(head.level, q.level) && (q.components === undefined || q.components.includes(head.component));
    if (keep && q.grep !== undefined) keep = lines.some((l) => l.includes(q.grep!));
    this.shownLast = keep;
    if (!keep) return;
    this.out.write(q.json ? this.toJson(head, lines) + "\n" : lines.join("\n") + "\n");
  }

  private filters(): boolean {
    return this.query.level !== undefined || this.query.grep !== undefined || this.query.components !== undefined;
  }

  private toJson(head: RecordHead, lines: string[]): string {
    const first = lines[0]!;
    const rest = lines.slice(1);
    if (first.startsWith("{")) {
      if (rest.length === 0) return first;
      const record = JSON.parse(first) as Record<string, unknown>;
      record.msg = [String(record.msg ?? ""), ...rest].join("\n");
      return JSON.stringify(record);
    }
    // A text line's fields stay inside msg: "k=v" cannot be told apart from message text.
    const m = TEXT_HEAD.exec(first);
    const msg = unescapeText(first.slice(m === null ? 0 : m[0].length));
    return JSON.stringify({ time: new Date(head.time).toISOString(), level: head.level, component: head.component, msg: [msg, ...rest].join("\n") });
  }
}

/**
 * Print the records of `query` from `file` and its rotated copies. Files wholly outside the
 * window are skipped by their first and last record; in the others the window's edges are
 * found by binary search. With `upTo`, the file with that inode is read up to that size and
 * newer files are left to `follow`.
 */
export function runQuery(file: string, query: LogQuery, parser: LineParser, out: Output, upTo?: ReadMark): void {
  const printer = new RecordPrinter(query, parser, out);
  for (const path of logFiles(file)) {
    let f: LogFile;
    try {
      f = new LogFile(path, parser, upTo);
    } catch (err) {
      // Rotated away between the listing and the open: its records are in the next file.
      if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw err;
    }
    try {
      if (f.size > 0) printWindow(f, query, printer, out);
    } finally {
      f.close();
    }
    if (upTo !== undefined && f.ino === upTo.ino) break;
  }
  out.flush();
}

function printWindow(f: LogFile, query: LogQuery, printer: RecordPrinter, out: Output): void {
  const { since, until } = query;
  if (since !== undefined || until !== undefined) {
    const span = f.span();
    if (span === undefined || (since !== undefined && span.last < since) || (until !== undefined && span.first > until)) return;
  }
  const start = since === undefined ? 0 : f.seek((t) => t >= since);
  const end = until === undefined ? f.size : f.seek((t) => t > until);
  if (start >= end) return;
  if (printer.passThrough) copyBytes(f.fd, start, end, out);
  else {
    forEachLine(f.fd, start, end, (line) => printer.line(line));
    printer.flush();
  }
}

function copyBytes(fd: number, start: number, end: number, out: Output): void {
  const buf = Buffer.allocUnsafe(1 << 20);
  let pos = start;
  let last = 0x0a;
  while (pos < end) {
    const n = readSync(fd, buf, 0, Math.min(buf.length, end - pos), pos);
    if (n <= 0) break;
    out.writeBytes(Buffer.from(buf.subarray(0, n)));
    last = buf[n - 1]!;
    pos += n;
  }
  // A last line still being written gets its newline, so the next file starts on its own line.
  if (last !== 0x0a) out.write("\n");
}

/** An open file being followed: read up to `pos`. */
export interface Tail {
  readonly fd: number;
  readonly ino: number;
  pos: number;
  partial: Buffer;
}

/** Open `file` for `follow` at its end (undefined if it does not exist yet); open it before the query, see runQuery's `upTo`. */
export function openAtEnd(file: string): Tail | undefined {
  return openTail(file, "end");
}

function openTail(path: string, pos: "start" | "end"): Tail | undefined {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const st = fstatSync(fd);
  return { fd, ino: st.ino, pos: pos === "start" ? 0 : st.size, partial: Buffer.alloc(0) };
}

/** Read what was appended since the last call; complete lines go to `onLine`. */
function drain(t: Tail, onLine: (line: string) => void, final = false): void {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (;;) {
    const n = readSync(t.fd, buf, 0, buf.length, t.pos);
    if (n <= 0) break;
    t.pos += n;
    let data = t.partial.length > 0 ? Buffer.concat([t.partial, buf.subarray(0, n)]) : buf.subarray(0, n);
    let from = 0;
    for (;;) {
      const i = data.indexOf(0x0a, from);
      if (i < 0) break;
      onLine(data.toString("utf8", from, i));
      from = i + 1;
    }
    t.partial = Buffer.from(data.subarray(from));
    data = Buffer.alloc(0);
  }
  if (final && t.partial.length > 0) {
    onLine(t.partial.toString("utf8"));
    t.partial = Buffer.alloc(0);
  }
}

/**
 * Files the logger rotated past since `ino` was at the path (several size rotations within
 * one poll): the numbered copies newer than the one that is now `ino`, oldest first.
 */
function rotatedAfter(file: string, ino: number, current: number | undefined): Tail[] {
  const rotated = logFiles(file).filter((p) => p !== file);
  const inos = rotated.map((p) => {
    try {
      return statSync(p).ino;
    } catch {
      return -1;
    }
  });
  const k = inos.indexOf(ino);
  if (k < 0) return [];
  return rotated
    .slice(k + 1)
    .filter((_p, j) => inos[k + 1 + j] !== current)
    .map((p) => openTail(p, "start"))
    .filter((t): t is Tail => t !== undefined);
}

/**
 * Print new records of `file` until `signal` aborts, polling every `intervalMs` (as `tail -F`
 * does: inotify misses renames on some filesystems). Starts from `start` (see openAtEnd);
 * without it, from the start of the file once it appears.
 * After a rename the old file is read to its end first: logrotate renames the file before the
 * server reopens, and the server goes on appending to the old file until then.
 */
export async function follow(file: string, query: LogQuery, parser: LineParser, out: Output, start: Tail | undefined, signal?: AbortSignal, intervalMs = 100): Promise<void> {
  const printer = new RecordPrinter({ ...query, since: undefined, until: undefined }, parser, out);
  const onLine = (line: string) => printer.line(line);
  let cur = start;
  let replaced: Tail[] = [];
  try {
    while (signal?.aborted !== true) {
      let st: ReturnType<typeof statSync> | undefined;
      try {
        st = statSync(file);
      } catch {
        st = undefined; // between logrotate's rename and create
      }
      if (st !== undefined && (cur === undefined || st.ino !== cur.ino)) {
        // Open first, list after: a file rotated away before the open is then in the list.
        const next = openTail(file, "start");
        if (cur !== undefined) replaced.push(cur, ...rotatedAfter(file, cur.ino, next?.ino));
        cur = next;
      } else if (st !== undefined && cur !== undefined && st.size < cur.pos) {
        cur.pos = 0; // truncated in place (copytruncate)
        cur.partial = Buffer.alloc(0);
      }
      // Seen before draining the old files: once the new file has data, the writer has moved
      // on and the old files are complete.
      const moved = cur !== undefined && fstatSync(cur.fd).size > 0;
      for (const t of replaced) drain(t, onLine, moved);
      if (moved) {
        for (const t of replaced) closeSync(t.fd);
        replaced = [];
      }
      if (cur !== undefined) drain(cur, onLine);
      printer.flush();
      out.flush();
      try {
        await delay(intervalMs, undefined, { signal });
      } catch {
        break;
      }
    }
  } finally {
    for (const t of replaced) closeSync(t.fd);
    if (cur !== undefined) closeSync(cur.fd);
  }
}
