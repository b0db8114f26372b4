// CLI start-up: wall and CPU time of short `moltbot` commands against a bare `node -e 0`, the
// median of N runs each, interleaved so machine noise hits every command alike. CPU time
// (user + sys, from /usr/bin/time) is the steadier figure on a shared machine.
//
//   node --import tsx bench/cli-startup.ts [--runs 10] [--baseline OTHER/bin/moltbot]
//
// --baseline runs the same commands with another build too (a before/after), alternating.
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import path from "node:path";
import { parseArgs } from "node:util";
import { commandLine, machine, median } from "./lib.js";

const { values } = parseArgs({ options: { runs: { type: "string", default: "10" }, baseline: { type: "string" } } });
const RUNS = Number(values.runs);
const BIN = path.resolve(import.meta.dirname, "..", "bin", "moltbot");

// `status` needs something to read: a server answering one fixed, contract-shaped document.
const doc = JSON.stringify({
  server: { version: "0.1.0", pid: 1, started_at: new Date().toISOString(), uptime_s: 1, listen: "http://127.0.0.1:1" },
  window_s: 5,
  models: [],
  entries: [],
});
const server = createServer((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end(doc));
await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;

const commands: string[][] = [["--help"], ["deploy", "--help"], ["status", "--url", url], ["deploy", "--such-flag"]];
// What one GET costs a fresh process: Node 20's fetch loads undici on first use (and its
// keep-alive timer holds the process after the answer); node:http is already in the binary.
const fetchOnce = `fetch(${JSON.stringify(url)}).then((r) => r.text())`;
const httpOnce = `require("node:http").get(${JSON.stringify(url)}, { agent: false }, (r) => r.resume())`;
const cases: Array<[string, string[]]> = [
  ["node -e 0", ["-e", "0"]],
  ["node: one GET with fetch", ["-e", fetchOnce]],
  ["node: one GET with node:http", ["-e", httpOnce]],
];
for (const c of commands) {
  const shown = c.map((a) => (a === url ? "URL" : a)).join(" ");
  if (values.baseline !== undefined) cases.push([`baseline: moltbot ${shown}`, [values.baseline, ...c]]);
  cases.push([`moltbot ${shown}`, [BIN, ...c]]);
}
const wall = new Map<string, number[]>(cases.map(([n]) => [n, []]));
const cpu = new Map<string, number[]>(cases.map(([n]) => [n, []]));

// time(1) runs asynchronously: a spawnSync would block the event loop the fake server answers on.
function timed(args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const p = spawn("/usr/bin/time", ["-f", "%e %U %S", process.execPath, ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    p.stderr.on("data", (d: Buffer) => (err += d.toString()));
    p.on("close", () => resolve(err));
  });
}

for (let i = 0; i < RUNS; i++) {
  for (const [name, args] of cases) {
    const [e, u, s] = (await timed(args)).trim().split("\n").pop()!.split(" ").map(Number) as [number, number, number];
    wall.get(name)!.push(e);
    cpu.get(name)!.push(u + s);
  }
}
server.close();

console.log(`# bench/cli-startup.ts — ${new Date().toISOString()}`);
console.log(`machine: ${machine()}`);
console.log(`command: ${commandLine()}`);
console.log(`\n| command | wall s (median of ${RUNS}) | CPU s user+sys (median) |`);
console.log(`|---|---|---|`);
for (const [name] of cases) console.log(`| \`${name}\` | ${median(wall.get(name)!).toFixed(2)} | ${median(cpu.get(name)!).toFixed(2)} |`);
