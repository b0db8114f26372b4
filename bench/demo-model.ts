// Builds the demo model from scratch into a temp dir and reports what it costs and how good it is:
//   node --import tsx bench/demo-model.ts [--vocab N] [--type f32|f16|q8_0] [--eval-files N|all] [--threads N]
// Held-out perplexity is computed by llama.cpp itself (the builder's child process scores the
// held-out Brown files through the engine's logits). Default: 10 of the 50 held-out files.

import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
if (!args.includes("--eval-files")) args.push("--eval-files", "10");
const dir = await mkdtemp(join(tmpdir(), "moltbot-bench-demo-"));
const out = join(dir, "demo.gguf");
const entry = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "demo", "build-demo-main.ts");
const t0 = performance.now();
try {
  const child = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), entry, "--out", out, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  let stdout = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  if (code !== 0) throw new Error(`builder exited with ${code}`);
  const s = JSON.parse(stdout.trim().split("\n").pop()!) as {
    vocabSize: number; tensorType: string; bytes: number; buildSeconds: number; trainTokens: number; logitMaxError: number;
    heldOut?: { tokens: number; files: number; perplexity: number; wordPerplexity: number; bitsPerChar: number; seconds: number };
  };
  console.log(`command:        node --import tsx bench/demo-model.ts ${process.argv.slice(2).join(" ")}`.trimEnd());
  console.log(`build time:     ${s.buildSeconds.toFixed(1)} s (corpus, vocab, llama.cpp tokenization, counts, smoothing, write, logit check)`);
  console.log(`vocab size:     ${s.vocabSize}`);
  console.log(`tensor type:    ${s.tensorType}`);
  console.log(`file size:      ${(s.bytes / 1e6).toFixed(1)} MB`);
  console.log(`train tokens:   ${s.trainTokens}`);
  console.log(`logit error:    ${s.logitMaxError.toExponential(2)} (max |engine logit - log P - const|)`);
  if (s.heldOut) {
    const h = s.heldOut;
    console.log(`held-out:       ${h.tokens} tokens in ${h.files} files, scored in ${h.seconds.toFixed(1)} s`);
    console.log(`perplexity:     ${h.perplexity.toFixed(2)} per token, ${h.bitsPerChar.toFixed(3)} bits/char, ${h.wordPerplexity.toFixed(0)} per word`);
  }
  console.log(`wall time:      ${((performance.now() - t0) / 1000).toFixed(1)} s`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
