// `--version` is the top-level flag only: it must not swallow a command's own `--version`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import yargs from "yargs";
import { withoutGlobalVersion } from "../src/cli/command-version.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = path.join(ROOT, "bin", "moltbot");
const PACKAGE_VERSION = (JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string }).version;

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("moltbot --version prints the package version and exits 0", () => {
  const r = cli(["--version"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), PACKAGE_VERSION);
});

test("a command without a --version option refuses it instead of printing the package version", () => {
  const r = cli(["deploy", "--version", "x"]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, "");
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /^moltbot: error: unknown option --version \(see 'moltbot deploy --help'\)$/m);
});

test("a command that declares --version receives it; the top-level flag still prints the version", async () => {
  // Set up as main.ts sets up its parser: strict, with yargs' top-level version flag.
  const received: Array<{ name: string; version: string }> = [];
  const models = withoutGlobalVersion({
    command: "models",
    describe: "model versions",
    builder: (y) =>
      y
        .command({
          command: "activate <name>",
          describe: "activate a version",
          builder: (a) => a.positional("name", { type: "string", demandOption: true }).option("version", { type: "string", requiresArg: true, demandOption: true }),
          handler: (args) => void received.push({ name: String(args.name), version: String(args.version) }),
        })
        .demandCommand(1),
    handler: () => undefined,
  });
  const parser = (argv: string[]) => {
    const output: string[] = [];
    const failures: string[] = [];
    const y = yargs(argv)
      .command(models)
      .demandCommand(1)
      .strict()
      .strictCommands()
      .locale("en")
      .help()
      .version("9.9.9")
      .exitProcess(false)
      .fail((msg) => void failures.push(msg));
    return { run: () => y.parseAsync(argv, {}, (_err, _argv, out) => void (out && output.push(out))), output, failures };
  };

  const activate = parser(["models", "activate", "demo", "--version", "v2.0"]);
  await activate.run();
  assert.deepEqual(received, [{ name: "demo", version: "v2.0" }]);
  assert.deepEqual(activate.output, []);
  assert.deepEqual(activate.failures, []);

  const top = parser(["--version"]);
  await top.run();
  assert.deepEqual(top.output, ["9.9.9"]);
  assert.equal(received.length, 1);
});
