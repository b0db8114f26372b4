// `moltbot logs`: read the server's log file (log.file) and its rotated copies, filtered by
// level, time, text and component, as written or as JSON lines; `--follow` keeps printing.
// Light to import (node built-ins and the reader); the config loader is imported only when run.
import { existsSync } from "node:fs";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { MoltbotError } from "../../errors.js";
import { parseDuration } from "../../config/units.js";
import { LEVELS, LineParser, logFiles } from "../../observe/log-reader.js";
import { Output, follow, openAtEnd, runQuery, type LogQuery } from "../../observe/log-query.js";

interface LogsArgs {
  filter?: string;
  last?: string;
  since?: string;
  until?: string;
  grep?: string;
  component?: string | string[];
  follow?: boolean;
  json?: boolean;
  utc?: boolean;
  config?: string;
  file?: string;
}

const FILTERS = [...LEVELS, "AUDIT"];

function usage(message: string): MoltbotError {
  return new MoltbotError("cli_usage", message);
}

// A date and time as the text log writes it ("2026-11-30 14:30:00"), or ISO 8601 with or
// without a zone; seconds, fraction and the time itself are optional.
const TIME_RE = /^(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,3})\d*)?)?)?(Z|[+-]\d\d:?\d\d)?$/i;

/**
 * `--since`/`--until`: a time without a zone is read like the log's text timestamps (local
 * time, or UTC with log.utc / --utc); a zone (Z, +02:00) is honoured; a duration ("2h") means
 * that long ago. `--until` to the second includes that whole second.
 */
export function parseTimeFlag(flag: string, value: string, parser: LineParser, now: number, end: boolean): number {
  const bad = () => usage(`--${flag}: expected a time like "2026-11-30 14:30:00", "2026-11-30T14:30:00Z" or a duration ago like "2h", got ${JSON.stringify(value)}`);
  if (/^\d+(\.\d+)?(ms|s|m|h|d)$/.test(value)) return now - parseDuration(value);
  const m = TIME_RE.exec(value.trim());
  if (m === null) throw bad();
  const [y, mo, d, h = 0, mi = 0, s = 0] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((x) => (x === undefined ? undefined : Number(x))) as number[];
  if (mo! < 1 || mo! > 12 || d! < 1 || d! > 31 || h > 23 || mi > 59 || s > 59) throw bad();
  const ms = m[7] === undefined ? 0 : Number(m[7].padEnd(3, "0"));
  // The last millisecond of the unit written: "--until 14:30" takes in 14:30:59.999.
  const extra = !end || m[7] !== undefined ? 0 : m[6] !== undefined ? 999 : m[4] !== undefined ? 59_999 : 86_399_999;
  const zone = m[8];
  let t: number;
  if (zone === undefined) t = parser.localTime(y!, mo!, d!, h, mi, s, ms);
  else {
    const utc = Date.UTC(y!, mo! - 1, d!, h, mi, s, ms);
    if (zone.toUpperCase() === "Z") t = utc;
    else {
      const z = /^([+-])(\d\d):?(\d\d)$/.exec(zone)!;
      t = utc - (z[1] === "-" ? -1 : 1) * (Number(z[2]) * 60 + Number(z[3])) * 60_000;
    }
  }
  if (Number.isNaN(t)) throw bad();
  return t + extra;
}

export const logsCommand: CommandModule<object, LogsArgs> = {
  command: "logs",
  describe: "Print the server's log file (and its rotated copies) filtered by level, time, text and component",
  builder: (y: Argv) =>
    y
      .option("filter", { type: "string", requiresArg: true, describe: `level: ${LEVELS.join(", ")} keep that level and above (AUDIT records left out); AUDIT keeps only audit records` })
      .option("last", { type: "string", requiresArg: true, describe: "records of the last duration, e.g. 30m, 1h, 2d (units ms, s, m, h, d)" })
      .option("since", { type: "string", requiresArg: true, describe: 'from this time: "2026-11-30 14:30:00" (the log\'s zone: local, or UTC with log.utc), ISO 8601 with a zone, or a duration ago ("2h")' })
      .option("until", { type: "string", requiresArg: true, describe: "up to this time (inclusive, same forms as --since)" })
      .option("grep", { type: "string", requiresArg: true, describe: "only records containing this text (case-sensitive, not a pattern)" })
      .option("component", { type: "string", requiresArg: true, describe: "only records of this component (api, inference, server, model_loader, ...); repeatable" })
      .option("follow", { alias: "f", type: "boolean", default: false, describe: "keep printing new records, across rotations, until Ctrl-C" })
      .option("json", { type: "boolean", default: false, describe: "print JSON lines (text lines converted: time, level, component, msg)" })
      .option("utc", { type: "boolean", describe: "text timestamps are UTC (default: log.utc from the config)" })
      .option("config", { type: "string", requiresArg: true, describe: "moltbot.yaml to read log.file from (default: $MOLTBOT_CONFIG, else ./moltbot.yaml if present)" })
      .option("file", { type: "string", requiresArg: true, describe: "log file to read instead of log.file" })
      .conflicts("last", "since")
      .example("$0 logs --filter ERROR --last 1h", "errors and criticals of the last hour")
      .example('$0 logs --since "2026-11-30 14:00:00" --until "2026-11-30 14:30:00" --component api', "the API's records of half an hour")
      .example("$0 logs --grep 7f3c2a --json", "every record of one request id, as JSON lines")
      .example("$0 logs -f --filter WARNING", "follow warnings and worse") as Argv<LogsArgs>,
  handler: async (args: ArgumentsCamelCase<LogsArgs>) => {
    const now = Date.now();
    let level: string | undefined;
    if (args.filter !== undefined) {
      level = args.filter.toUpperCase();
      if (!FILTERS.includes(level)) throw usage(`--filter: expected one of ${FILTERS.join(", ")}, got ${JSON.stringify(args.filter)}`);
    }
    let lastMs: number | undefined;
    if (args.last !== undefined) {
      try {
        lastMs = parseDuration(args.last);
      } catch {
        throw usage(`--last: expected a duration like 30m, 1h or 2d (units ms, s, m, h, d), got ${JSON.stringify(args.last)}`);
      }
    }
    if (args.follow && args.until !== undefined) throw usage("--until: cannot be combined with --follow (following has no end)");

    // The config is read for log.file and log.utc, even with --file (the zone of text timestamps).
    const { loadConfig } = await import("../../config/load.js");
    const log = loadConfig({ file: args.config, env: process.env }).config.log;
    const file = args.file ?? log.file;
    if (file === undefined) throw usage("no log file: set log.file in the config (the server logs to stdout only without it) or pass --file PATH");
    const parser = new LineParser(args.utc ?? log.utc);

    const components = args.component === undefined ? undefined : ([] as string[]).concat(args.component);
    const query: LogQuery = {
      since: lastMs !== undefined ? now - lastMs : args.since === undefined ? undefined : parseTimeFlag("since", args.since, parser, now, false),
      until: args.until === undefined ? undefined : parseTimeFlag("until", args.until, parser, now, true),
      level,
      grep: args.grep,
      components,
      json: args.json === true,
    };

    if (!args.follow && !existsSync(file) && logFiles(file).length === 0) throw usage(`${file}: log file not found`);
    // `moltbot logs | head` closes the pipe: that is the reader's choice, not an error.
    process.stdout.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EPIPE") process.exit(0);
      throw err;
    });
    const out = new Output();
    if (!args.follow) {
      runQuery(file, query, parser, out);
      return;
    }
    // Opened before the query, so what is appended while the query reads is followed, once.
    const tail = openAtEnd(file);
    // --follow alone starts at the end (new records only); with --last/--since it prints the window first.
    if (query.since !== undefined) runQuery(file, query, parser, out, tail === undefined ? undefined : { ino: tail.ino, size: tail.pos });
    const stop = new AbortController();
    process.once("SIGINT", () => stop.abort());
    process.once("SIGTERM", () => stop.abort());
    await follow(file, query, parser, out, tail, stop.signal);
  },
};
