// Chooses the demo model's SentencePiece vocabulary from corpus text: single characters, then
// the most frequent words as SPM would see them ("▁word" after a space, bare "word" after a
// quote or bracket), each with all its prefixes. The prefixes are what makes a word reachable:
// llama.cpp's SPM tokenizer grows symbols by merging adjacent pieces, and a "▁"-prefix merged
// with the next symbol of the same word is always another prefix, so every chosen word comes
// out as one token whatever the merge order.

import { SPM_SPACE, SPECIAL_AND_BYTE_TOKENS, buildSpmVocab } from "../gguf/spm-vocab.js";
import type { SpmVocab } from "../gguf/spm-vocab.js";

/** Word-ish runs (letters/digits) or one other character, with the space before them if any. */
const PRETOKEN = /( ?)([A-Za-z0-9]+|[^A-Za-z0-9 ])/g;

export function chooseDemoVocab(sentences: Iterable<string>, vocabSize: number): SpmVocab {
  const pretokens = new Map<string, number>();
  const chars = new Map<string, number>();
  for (const s of sentences) {
    // SPM's add_space_prefix puts a space before every text; sentences are tokenized one by one.
    for (const m of (" " + s).matchAll(PRETOKEN)) {
      const piece = (m[1] ? SPM_SPACE : "") + m[2]!;
      pretokens.set(piece, (pretokens.get(piece) ?? 0) + 1);
    }
    for (const c of s) if (c !== " ") chars.set(c, (chars.get(c) ?? 0) + 1);
  }

  const budget = vocabSize - SPECIAL_AND_BYTE_TOKENS;
  const chosen = new Set<string>([SPM_SPACE]);
  // Characters seen a few times get their own piece; rarer ones use byte fallback.
  for (const [c, n] of [...chars].sort((a, b) => b[1] - a[1])) if (n >= 3 && chosen.size < budget) chosen.add(c);

  // Greedy by value for money: a word's frequency over the pieces it still needs (itself plus
  // missing prefixes), re-ranked in rounds as shared prefixes get bought. Plain frequency order
  // spends the budget on long words' prefix chains and leaves many common words split.
  let candidates = [...pretokens].filter(([p]) => Array.from(p).length > 1);
  const missingOf = (piece: string): string[] => {
    const cs = Array.from(piece);
    const missing: string[] = [];
    for (let i = 2; i <= cs.length; i++) {
      const prefix = cs.slice(0, i).join("");
      if (!chosen.has(prefix)) missing.push(prefix);
    }
    return missing;
  };
  while (chosen.size < budget && candidates.length > 0) {
    const scored = candidates
      .map(([piece, n]) => ({ piece, n, missing: missingOf(piece) }))
      .filter((c) => c.missing.length > 0);
    scored.sort((a, b) => b.n / b.missing.length - a.n / a.missing.length || (a.piece < b.piece ? -1 : 1));
    const round = Math.max(16, Math.ceil((budget - chosen.size) / 8));
    let taken = 0;
    for (const c of scored) {
      if (taken >= round) break;
      const missing = missingOf(c.piece); // earlier picks this round may have bought some
      if (chosen.size + missing.length > budget) continue;
      for (const p of missing) chosen.add(p);
      taken++;
    }
    if (taken === 0) break;
    candidates = scored.map((c) => [c.piece, c.n] as [string, number]);
  }
  // Insertion order = priority: characters, then words in frequency order with their prefixes.
  return buildSpmVocab(chosen, vocabSize);
}
