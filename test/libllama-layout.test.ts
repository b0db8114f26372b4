// Checks that the structs src/engine/libllama.ts passes by value have exactly the layout of
// the llama.h that node-llama-cpp bundles: test/native/layout.c is compiled against that
// header (extracted from node_modules/node-llama-cpp/llama/gitRelease.bundle) and its
// sizeof/offsetof figures are compared with koffi's. Skipped when no C compiler exists.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import koffi from "koffi";
import { LLAMA_STRUCTS } from "../src/engine/libllama.js";

/** The package root (holds package.json), whether run from source or from dist/. */
const root = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json")) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
})();
const bundle = path.join(root, "node_modules/node-llama-cpp/llama/gitRelease.bundle");
const info = JSON.parse(readFileSync(path.join(root, "node_modules/node-llama-cpp/llama/llama.cpp.info.json"), "utf8")) as { tag: string };

function compiler(): string | null {
  for (const cc of [process.env.CC, "cc", "gcc", "clang"]) {
    if (cc && spawnSync(cc, ["--version"], { stdio: "ignore" }).status === 0) return cc;
  }
  return null;
}

/** The bundled llama.cpp source of the exact shipped version, cloned once into a cache dir. */
function llamaSource(): string {
  const dir = path.join(os.homedir(), ".cache", "moltbot", "llama-src", info.tag);
  if (!existsSync(path.join(dir, "include", "llama.h"))) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(path.dirname(dir), { recursive: true });
    execFileSync("git", ["clone", "--quiet", bundle, dir], { stdio: "ignore" });
  }
  return dir;
}

const cc = compiler();

test("koffi struct layouts match the bundled llama.h", { skip: cc === null ? "no C compiler (cc/gcc/clang) on this machine: layout not checked" : false }, () => {
  const src = llamaSource();
  const exe = path.join(os.tmpdir(), `moltbot-llama-layout-${process.pid}`);
  execFileSync(cc!, ["-I", path.join(src, "include"), "-I", path.join(src, "ggml", "include"), path.join(root, "test/native/layout.c"), "-o", exe]);
  const c = JSON.parse(execFileSync(exe, { encoding: "utf8" })) as Record<string, { size: number; fields: Record<string, number> }>;
  rmSync(exe, { force: true });

  for (const [name, type] of Object.entries(LLAMA_STRUCTS)) {
    const native = c[name];
    assert.ok(native, `layout.c does not print ${name}`);
    const members = Object.keys(koffi.type(type).members ?? {});
    assert.deepEqual(members.sort(), Object.keys(native.fields).sort(), `${name}: field names differ from llama.h`);
    for (const [field, offset] of Object.entries(native.fields)) {
      assert.equal(koffi.offsetof(type, field), offset, `${name}.${field}: koffi offset differs from C`);
    }
    assert.equal(koffi.sizeof(type), native.size, `${name}: koffi size differs from C`);
  }
});
