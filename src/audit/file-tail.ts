// Reading the ends of an append-only file without reading all of it: the first line, the
// last complete line, and the torn bytes after it that a crash mid-write can leave.
import { fstatSync, readSync } from "node:fs";

const CHUNK = 64 * 1024;
const NEWLINE = 0x0a;

/** Offset of the last "\n" strictly before `end`, or -1. */
function lastNewlineBefore(fd: number, end: number): number {
  const buf = Buffer.allocUnsafe(CHUNK);
  let pos = end;
  while (pos > 0) {
    const start = Math.max(0, pos - CHUNK);
    const n = readSync(fd, buf, 0, pos - start, start);
    const at = buf.subarray(0, n).lastIndexOf(NEWLINE);
    if (at >= 0) return start + at;
    pos = start;
  }
  return -1;
}

function readRange(fd: number, start: number, end: number): string {
  const buf = Buffer.allocUnsafe(end - start);
  let done = 0;
  while (done < buf.length) {
    const n = readSync(fd, buf, done, buf.length - done, start + done);
    if (n === 0) break;
    done += n;
  }
  return buf.subarray(0, done).toString("utf8");
}

export interface FileEnds {
  size: number;
  /** The first line (without "\n"); undefined when the file holds no complete line. */
  first: string | undefined;
  /** The last complete line. */
  last: string | undefined;
  /** Where bytes after the last "\n" begin (a torn write), or undefined when the file ends with "\n". */
  tornAt: number | undefined;
}

export function fileEnds(fd: number): FileEnds {
  const size = fstatSync(fd).size;
  if (size === 0) return { size, first: undefined, last: undefined, tornAt: undefined };
  const lastNl = lastNewlineBefore(fd, size);
  const tornAt = lastNl === size - 1 ? undefined : lastNl + 1;
  if (lastNl < 0) return { size, first: undefined, last: undefined, tornAt };
  const beforeLast = lastNewlineBefore(fd, lastNl);
  const last = readRange(fd, beforeLast + 1, lastNl);
  let first = last;
  if (beforeLast >= 0) {
    // Forward to the first newline.
    const buf = Buffer.allocUnsafe(CHUNK);
    let pos = 0;
    let firstNl = -1;
    while (firstNl < 0 && pos <= beforeLast) {
      const n = readSync(fd, buf, 0, CHUNK, pos);
      const at = buf.subarray(0, n).indexOf(NEWLINE);
      if (at >= 0) firstNl = pos + at;
      pos += n;
    }
    first = readRange(fd, 0, firstNl);
  }
  return { size, first, last, tornAt };
}

export function readBytes(fd: number, start: number, end: number): string {
  return readRange(fd, start, end);
}
