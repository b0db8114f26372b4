// The server's logger, in the seed's line format:
//   [2023-11-15 14:30:22] [INFO] [model_loader] Model v2.0 loaded successfully
// or JSON lines for log shippers. AUDIT records bypass the level filter. Every record is one
// line: control characters in messages are escaped so a prompt cannot forge log lines.
// File writes are synchronous appends: a record is on disk before the call returns (a crash
// loses nothing) and lines from one process never interleave; logging is never per token.

import { closeSync, fstatSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import type { MoltbotConfig } from "../config/schema.js";
import { parseBytes } from "../config/units.js";

export type LogLevel = MoltbotConfig["log"]["level"];
export type RecordLevel = LogLevel | "AUDIT";
export type LogFields = Record<string, unknown>;

const RANK: Record<RecordLevel, number> = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40, CRITICAL: 50, AUDIT: Infinity };

export interface LoggerOptions {
  level: LogLevel;
  format: "text" | "json";
  /** Text timestamps in UTC instead of local time (JSON is always UTC ISO-8601). */
  utc?: boolean;
  /** Append records to this file too; parent directories are created. */
  file?: string | undefined;
  /** Rotate `file` when a record would take it past this many bytes (0: never). */
  maxBytes?: number;
  /** Rotated files kept: file.1 (newest) .. file.N. */
  keep?: number;
  /** Write to stdout (default true). */
  stdout?: boolean;
  /** Component of the root logger (default "moltbot"). */
  component?: string;
  clock?: () => Date;
}

export interface Logger {
  readonly component: string;
  child(component: string): Logger;
  isLevelEnabled(level: RecordLevel): boolean;
  /** The level now in force; shared by the root and its children. */
  readonly level: LogLevel;
  /** Change the level of the root and every child at once (a config reload). */
  setLevel(level: LogLevel): void;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warning(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  critical(msg: string, fields?: LogFields): void;
  /** Always written, whatever the level. */
  audit(msg: string, fields?: LogFields): void;
  /**
   * Reopen the file at its path (after logrotate renamed it away, `kill -USR1`). Records
   * written before the call are in the old file, records after it in the new one: writes are
   * synchronous, so none is lost or doubled. Throws if the path cannot be opened; the old
   * file then stays in use.
   */
  reopen(): void;
  /** Close the file (writes are already flushed). Shared by the root and its children. */
  close(): void;
}

/** Logger options from the `log` section of a loaded config. */
export function loggerOptions(log: MoltbotConfig["log"]): LoggerOptions {
  return { level: log.level, format: log.format, utc: log.utc, file: log.file, maxBytes: parseBytes(log.max_size), keep: log.keep };
}

export function createLogger(opts: LoggerOptions): Logger {
  const sink = new Sink(opts);
  let level = opts.level;
  let threshold = RANK[level];
  const clock = opts.clock ?? (() => new Date());
  const render = opts.format === "json" ? jsonLine : textLine(opts.utc === true);

  const make = (component: string): Logger => {
    const write = (level: RecordLevel, msg: string, fields: LogFields | undefined): void => {
      // The cheap path: a filtered level costs one comparison, no formatting.
      if (RANK[level] < threshold) return;
      sink.write(render(clock(), level, component, msg, fields));
    };
    return {
      component,
      child: (name) => make(name),
      isLevelEnabled: (l) => RANK[l] >= threshold,
      get level() {
        return level;
      },
      setLevel: (next) => {
        level = next;
        threshold = RANK[next];
      },
      debug: (msg, fields) => write("DEBUG", msg, fields),
      info: (msg, fields) => write("INFO", msg, fields),
      warning: (msg, fields) => write("WARNING", msg, fields),
      error: (msg, fields) => write("ERROR", msg, fields),
      critical: (msg, fields) => write("CRITICAL", msg, fields),
      audit: (msg, fields) => write("AUDIT", msg, fields),
      reopen: () => sink.reopen(),
      close: () => sink.close(),
    };
  };
  return make(opts.component ?? "moltbot");
}

type Render = (time: Date, level: RecordLevel, component: string, msg: string, fields: LogFields | undefined) => string;

const pad = (n: number, width = 2): string => String(n).padStart(width, "0");

function textLine(utc: boolean): Render {
  const stamp = utc
    ? (d: Date) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`
    : (d: Date) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return (time, level, component, msg, fields) => {
    let line = `[${stamp(time)}] [${level}] [${component}] ${escape(msg)}`;
    if (fields !== undefined) {
      // logfmt-style suffix; the seed's part of the line stays exactly as specified.
      for (const [key, value] of Object.entries(fields)) {
        if (value === undefined) continue;
        const text = typeof value === "string" ? value : value instanceof Error ? errorText(value) : stringify(plain(value));
        line += ` ${escape(key)}=${/^[^\s"=]+$/.test(text) ? text : JSON.stringify(text)}`;
      }
    }
    return line + "\n";
  };
}

const RESERVED = new Set(["time", "level", "component", "msg"]);

const jsonLine: Render = (time, level, component, msg, fields) => {
  const record: Record<string, unknown> = { time: time.toISOString(), level, component, msg };
  if (fields !== undefined) {
    for (const [key, value] of Object.entries(fields)) {
      // A field never overwrites the record's own keys; it keeps its value under "field_<key>".
      record[RESERVED.has(key) ? `field_${key}` : key] = plain(value);
    }
  }
  // JSON.stringify escapes newlines, so the record stays one line.
  return stringify(record) + "\n";
};

function errorText(err: Error): string {
  const code = (err as { code?: unknown }).code;
  return `${code === undefined ? err.name : String(code)}: ${err.message}`;
}

/** Values JSON cannot carry as-is: errors (own properties are not enumerable), bigints. */
function plain(value: unknown): unknown {
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code;
    return code === undefined ? { name: value.name, message: value.message } : { name: value.name, code, message: value.message };
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

function stringify(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)) ?? String(value);
  } catch {
    return '"[unserializable]"';
  }
}

/** One record, one line: newlines and other control characters become visible escapes. */
function escape(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000a-\u001f\u007f\\]/g, (c) => {
    switch (c) {
      case "\n":
        return "\\n";
      case "\r":
        return "\\r";
      case "\\":
        return "\\\\";
      default:
        return `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
    }
  });
}

/** stdout and an optional size-rotated file. */
class Sink {
  private fd: number | undefined;
  private size = 0;
  private closed = false;
  private readonly file: string | undefined;
  private readonly maxBytes: number;
  private readonly keep: number;
  private readonly stdout: boolean;

  constructor(opts: LoggerOptions) {
    this.file = opts.file;
    this.maxBytes = opts.maxBytes ?? 0;
    this.keep = opts.keep ?? 5;
    this.stdout = opts.stdout ?? true;
    if (this.file !== undefined) {
      mkdirSync(dirname(this.file), { recursive: true });
      this.open();
    }
  }

  write(line: string): void {
    if (this.stdout) process.stdout.write(line);
    if (this.fd === undefined) return;
    const bytes = Buffer.byteLength(line);
    if (this.maxBytes > 0 && this.size > 0 && this.size + bytes > this.maxBytes) this.rotate();
    writeSync(this.fd, line);
    this.size += bytes;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  reopen(): void {
    if (this.closed || this.file === undefined) return;
    const old = this.fd;
    this.open();
    if (old !== undefined) closeSync(old);
  }

  private open(): void {
    // Not world-readable: records name users and, with audit include_content, prompts.
    const fd = openSync(this.file!, "a", 0o640);
    this.fd = fd;
    this.size = fstatSync(fd).size;
  }

  /** file -> file.1 -> ... -> file.<keep>; the oldest falls off. keep 0 just starts afresh. */
  private rotate(): void {
    const file = this.file!;
    closeSync(this.fd!);
    if (this.keep === 0) {
      rmSync(file, { force: true });
    } else {
      rmSync(`${file}.${this.keep}`, { force: true });
      for (let i = this.keep - 1; i >= 1; i--) {
        try {
          renameSync(`${file}.${i}`, `${file}.${i + 1}`);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        }
      }
      try {
        renameSync(file, `${file}.1`);
      } catch (err) {
        // logrotate moved the file away and SIGUSR1 has not come yet: start the new one all the same.
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
    this.open();
  }
}
