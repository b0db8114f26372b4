// `moltbot logs` on a ~1 GB log: how long the real CLI takes to answer `--last 1h` and a
// `--since/--until` window in the middle, against a full scan and against bare CLI start-up.
// Generates a rotated log (moltbot.log.4 .. moltbot.log, 10 days ending now) under /tmp in
// the text format, then in JSON, and deletes each after timing it.
//   node --import tsx bench/logs.ts [--gb 1] [--runs 3]
// Run it under the shared CPU lock: flock /tmp/moltbot-cpu.lock node --import tsx bench/logs.ts
import { execFileSync, spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { LineParser } from "../src/observe/log-reader.js";
import { Output, runQuery, type LogQuery } from "../src/observe/log-query.js";

const { values } = parseArgs({ options: { gb: { type: "string", default: "1" }, runs: { type: "string", default: "3" } } });
const TOTAL = Number(values.gb) * 1e9;
const RUNS = Number(values.runs);
const FILES = 5;
const SPAN_MS = 10 * 86_400_000;
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const BIN = path.join(ROOT, "bin", "moltbot");

const LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "WARNING", "INFO", "ERROR", "INFO", "AUDIT", "INFO"];
const COMPONENTS = ["api", "inference", "server", "model_loader", "scheduler"];

/** A request id written an hour or so before the end, for the --grep case. */
let recentId = "";

/** Writes ~TOTAL bytes over FILES files, oldest (file.N) first, times evenly spread over SPAN_MS. */
function generate(file: string, format: "text" | "json", end: number): void {
  const start = end - SPAN_MS;
  const sample = format === "text" ? 118 : 150; // bytes per line, about
  const lines = Math.round(TOTAL / sample);
  const perFile = Math.ceil(lines / FILES);
  const pad = (n: number) => String(n).padStart(2, "0");
  let n = 0;
  for (let k = FILES - 1; k >= 0; k--) {
    const fd = openSync(k === 0 ? file : `${file}.${k}`, "w");
    let chunk: string[] = [];
    let bytes = 0;
    let lastSecond = -1;
    let stamp = "";
    for (let i = 0; i < perFile && n < lines; i++, n++) {
      const t = start + Math.floor((n / lines) * SPAN_MS);
      const level = LEVELS[n % LEVELS.length]!;
      const component = COMPONENTS[n % COMPONENTS.length]!;
      const id = `${(n * 2654435761) % 4294967296}`.padStart(10, "0");
      if (n === lines - Math.floor(lines / 20)) recentId = id; // half a day before the end
      let line: string;
      if (format === "text") {
        const second = Math.floor(t / 1000);
        if (second !== lastSecond) {
          const d = new Date(t);
          stamp = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
          lastSecond = second;
        }
        line = `[${stamp}] [${level}] [${component}] POST /v1/chat/completions 200 ${(n % 997) / 10}ms model=demo tokens=${n % 512} request_id=${id}\n`;
      } else {
        line = `{"time":"${new Date(t).toISOString()}","level":"${level}","component":"${component}","msg":"POST /v1/chat/completions 200 ${(n % 997) / 10}ms","model":"demo","tokens":${n % 512},"request_id":"${id}"}\n`;
      }
      chunk.push(line);
      bytes += line.length;
      if (bytes >= 8 << 20) {
        writeSync(fd, chunk.join(""));
        chunk = [];
        bytes = 0;
      }
    }
    writeSync(fd, chunk.join(""));
    closeSync(fd);
  }
}

function timeCli(args: string[]): { ms: number; lines: number } {
  const times: number[] = [];
  let lines = 0;
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    const p = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", maxBuffer: 1 << 30, env: { ...process.env, MOLTBOT_CONFIG: "" } });
    times.push(performance.now() - t0);
    if (p.status !== 0) throw new Error(`moltbot ${args.join(" ")}: ${p.stderr}`);
    lines = p.stdout.length === 0 ? 0 : p.stdout.split("\n").length - 1;
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)]!, lines };
}

const utcText = (t: number) => new Date(t).toISOString().slice(0, 19).replace("T", " ");

console.log(`# moltbot logs on a ~${values.gb} GB log (${FILES} files, 10 days)`);
console.log(`command: node --import tsx bench/logs.ts --gb ${values.gb} --runs ${RUNS}`);
console.log(`machine: ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? "?"}), node ${process.version}; median of ${RUNS} runs; CLI = wall time of the whole \`moltbot logs\` process, query = the same query in-process (runQuery, output discarded)`);
const startup = timeCli(["--version"]);
console.log(`CLI start-up alone (moltbot --version): ${startup.ms.toFixed(0)} ms`);

for (const format of ["text", "json"] as const) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "moltbot-bench-logs-"));
  try {
    const file = path.join(dir, "moltbot.log");
    const end = Date.now();
    const g0 = performance.now();
    generate(file, format, end);
    const size = execFileSync("du", ["-sb", dir], { encoding: "utf8" }).split("\t")[0];
    console.log(`\n## ${format}: ${(Number(size) / 1e9).toFixed(2)} GB in ${FILES} files (generated in ${((performance.now() - g0) / 1000).toFixed(0)} s; current file ${(statSync(file).size / 1e6).toFixed(0)} MB)`);
    const mid = end - SPAN_MS / 2;
    const base = ["logs", "--file", file, "--utc"];
    const hour = 3_600_000;
    const cases: Array<[string, string[], LogQuery]> = [
      ["--last 1h", [...base, "--last", "1h"], { since: Date.now() - hour, json: false }],
      ["--since/--until, 1 h in the middle (moltbot.log.2)", [...base, "--since", utcText(mid), "--until", utcText(mid + hour - 1000)], { since: mid, until: mid + hour - 1, json: false }],
      ["--last 1h --filter ERROR", [...base, "--last", "1h", "--filter", "ERROR"], { since: Date.now() - hour, level: "ERROR", json: false }],
      ["--last 1h --json", [...base, "--last", "1h", "--json"], { since: Date.now() - hour, json: true }],
      ["--grep <request id> --last 1d", [...base, "--last", "1d", "--grep", recentId], { since: Date.now() - 24 * hour, grep: recentId, json: false }],
    ];
    console.log(`${"".padEnd(52)} ${"CLI".padStart(6)}    ${"query".padStart(6)}`);
    for (const [name, args, query] of cases) {
      const r = timeCli(args);
      // The same query in this process, output discarded: the reading without the CLI's start-up.
      const inProcess: number[] = [];
      for (let k = 0; k < RUNS; k++) {
        const t0 = performance.now();
        runQuery(file, query, new LineParser(true), new Output(() => {}));
        inProcess.push(performance.now() - t0);
      }
      inProcess.sort((a, b) => a - b);
      const q = inProcess[Math.floor(inProcess.length / 2)]!;
      console.log(`${name.padEnd(52)} ${r.ms.toFixed(0).padStart(6)} ms ${q.toFixed(0).padStart(6)} ms  ${r.lines} lines   moltbot ${args.slice(0, 1).concat(args.slice(3)).map((a) => (a.includes(" ") ? `"${a}"` : a)).join(" ")}`);
    }
    // The contrast: a filter without a time window parses every line of every file.
    const t0 = performance.now();
    const p = spawnSync(process.execPath, [BIN, ...base, "--filter", "CRITICAL"], { encoding: "utf8", env: { ...process.env, MOLTBOT_CONFIG: "" } });
    if (p.status !== 0) throw new Error(p.stderr);
    console.log(`${"full scan: --filter CRITICAL, no window (1 run)".padEnd(52)} ${(performance.now() - t0).toFixed(0).padStart(6)} ms  0 lines   moltbot logs --filter CRITICAL`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
