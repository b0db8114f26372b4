// engine.library_dir: an operator's own llama.cpp build used instead of the shipped binaries.
// The folder served from is, in order: $MOLTBOT_LLAMA_LIB_DIR; the build that
// scripts/build-llama-lib.sh leaves in ~/.cache/moltbot/llama-lib/<tag>-cpu/lib (libllama,
// libggml, libggml-base compiled from the bundled source with GGML_BACKEND_DL); else, when
// that build was never made (2.5 to 9 minutes on 2 cores, longer than the rest of the suite), a copy of
// the shipped CPU binaries in a temp folder, which exercises loading and checking from a
// foreign folder but not a compiled build. The test names the folder it used.
// Builds that must be refused are made with the C compiler: a libggml of another version, and
// one of the right version lacking the functions Moltbot binds.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import koffi from "koffi";
import OpenAI from "openai";
import { MoltbotError } from "../src/errors.js";
import { BUNDLED_DEFAULTS, BUNDLED_GGML_VERSION, locateLlamaBinaries, readLibraryDefaults } from "../src/engine/libllama.js";
import { makeRepository, removeDir, startServer, tempDir, TEST_ENGINE } from "./helpers/fixtures.js";
import type { AdminStatus } from "../src/server/routes/admin.js";

const SKIP = TEST_ENGINE === "ffi" ? false : "engine.library_dir is the FFI engine's";
const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const TAG = (JSON.parse(readFileSync(path.join(ROOT, "node_modules/node-llama-cpp/llama/llama.cpp.info.json"), "utf8")) as { tag: string }).tag;

function compiler(): string | null {
  for (const cc of [process.env.CC, "cc", "gcc", "clang"]) if (cc && spawnSync(cc, ["--version"], { stdio: "ignore" }).status === 0) return cc;
  return null;
}
const cc = compiler();

/** The folder to serve from, and what it is. */
async function libraryFolder(): Promise<{ dir: string; what: string; temp: boolean }> {
  const env = process.env.MOLTBOT_LLAMA_LIB_DIR;
  if (env) return { dir: env, what: `$MOLTBOT_LLAMA_LIB_DIR (${env})`, temp: false };
  const built = path.join(os.homedir(), ".cache", "moltbot", "llama-lib", `${TAG}-cpu`, "lib");
  if (existsSync(path.join(built, ".complete"))) return { dir: built, what: `the build of scripts/build-llama-lib.sh (${built})`, temp: false };
  const dir = await tempDir("moltbot-libdir-");
  const shipped = locateLlamaBinaries("cpu").binsDir;
  for (const f of readdirSync(shipped)) if (f.endsWith(".so")) copyFileSync(path.join(shipped, f), path.join(dir, f));
  return { dir, what: `a copy of the shipped CPU binaries (no build in ${built}: run scripts/build-llama-lib.sh)`, temp: true };
}

/** A fake "build": libggml.so whose ggml_version says `version`, and an empty libllama.so. */
async function fakeBuild(version: string): Promise<string> {
  const dir = await tempDir("moltbot-fakelib-");
  writeFileSync(path.join(dir, "ggml.c"), `const char *ggml_version(void) { return "${version}"; }\n`);
  writeFileSync(path.join(dir, "llama.c"), "int moltbot_nothing_here;\n");
  execFileSync(cc!, ["-shared", "-fPIC", "-o", path.join(dir, "libggml.so"), path.join(dir, "ggml.c")]);
  execFileSync(cc!, ["-shared", "-fPIC", "-o", path.join(dir, "libllama.so"), path.join(dir, "llama.c")]);
  return dir;
}

test("the bundled version and defaults this check compares with are the shipped library's", () => {
  const { binsDir, libraryPath } = locateLlamaBinaries("cpu");
  const base = koffi.load(path.join(binsDir, "libggml-base.so"));
  assert.equal((base.func("const char *ggml_version(void)") as () => string)(), BUNDLED_GGML_VERSION);
  const defaults = readLibraryDefaults(koffi.load(libraryPath));
  for (const [name, fields] of Object.entries(BUNDLED_DEFAULTS)) {
    const got = defaults[name as keyof typeof BUNDLED_DEFAULTS];
    assert.deepEqual(Object.keys(fields).sort(), Object.keys(got).sort(), `${name}: every field of our layout is compared`);
    for (const [field, want] of Object.entries(fields)) {
      const have = got[field];
      if (want === null) assert.ok(have === null || have === 0n || have === 0, `${name}.${field} is NULL`);
      else assert.equal(have, want, `${name}.${field}`);
    }
  }
});

describe("engine.library_dir", { skip: SKIP }, () => {
  let repo: string;
  before(async () => {
    repo = await makeRepository([{ name: "tiny", version: "v1" }]);
  });
  after(async () => removeDir(repo));

  test("serves from the operator's build: the worker loads its libllama, checks it, and generates", async () => {
    const lib = await libraryFolder();
    console.log(`# library_dir: ${lib.what}`);
    const srv = await startServer(repo, { config: { engine: { backend: "auto", library_dir: lib.dir } } });
    try {
      const line = srv.lines().find((l) => l.includes("Backend of tiny:"));
      assert.ok(line?.includes(`library ${path.resolve(lib.dir)}/libllama`), `the worker names the library it loaded: ${line}`);
      // A CPU-only build: auto finds no GPU module in the folder.
      assert.match(line!, /cuda \(library missing: no libggml-cuda\.so in /);
      const client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
      const r = await client.completions.create({ model: "tiny", prompt: "hello", max_tokens: 4 });
      assert.ok(r.usage!.completion_tokens > 0);
      const body = (await (await fetch(`${srv.url}/admin/status`)).json()) as AdminStatus;
      assert.equal(body.models[0]!.placement?.backend, "cpu");
    } finally {
      await srv.close();
      if (lib.temp) await removeDir(lib.dir);
    }
  });

  const refused = async (dir: string, re: RegExp) =>
    assert.rejects(startServer(repo, { config: { engine: { library_dir: dir } } }), (err: unknown) => {
      assert.ok(err instanceof MoltbotError, String(err));
      assert.equal(err.code, "library_invalid", err.message);
      assert.match(err.message, re);
      return true;
    });

  test("a folder without libllama is refused with what it holds", async () => {
    const dir = await tempDir("moltbot-emptylib-");
    try {
      await refused(dir, /engine\.library_dir .*: no libllama\.so in it \(found: no libraries\)/);
    } finally {
      await removeDir(dir);
    }
  });

  test("another ggml version is refused by its version", { skip: cc === null ? "no C compiler" : false }, async () => {
    const dir = await fakeBuild("0.24.0");
    try {
      await refused(dir, new RegExp(`it is ggml 0\\.24\\.0, but this Moltbot binds .* \\(ggml ${BUNDLED_GGML_VERSION.replace(/\./g, "\\.")}\\)`));
    } finally {
      await removeDir(dir);
    }
  });

  test("the right version lacking the functions we bind is refused with their names", { skip: cc === null ? "no C compiler" : false }, async () => {
    const dir = await fakeBuild(BUNDLED_GGML_VERSION);
    try {
      await refused(dir, /its libllama\/libggml lack \d+ function\(s\) Moltbot calls \(.*llama_decode.*\)/);
    } finally {
      await removeDir(dir);
    }
  });
});
