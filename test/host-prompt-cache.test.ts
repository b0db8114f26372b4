// The host-memory cache of saved sequences: longest-prefix lookup, a byte budget with LRU
// eviction, and entries made redundant by a longer one.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { HostPromptCache } from "../src/engine/host-prompt-cache.js";

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
const entry = (tokens: number[], bytes = tokens.length) => ({ tokens, data: new Uint8Array(bytes) });

describe("host prompt cache", () => {
  test("take returns the entry sharing the longest prefix, and removes it", () => {
    const c = new HostPromptCache(1000);
    c.put(entry(range(0, 50)));
    c.put(entry([...range(0, 20), ...range(900, 40)]));
    const prompt = [...range(0, 30), 7];
    assert.equal(c.peek(prompt, prompt.length - 1), 30);
    const got = c.take(prompt, prompt.length - 1, 0)!;
    assert.equal(got.depth, 30);
    assert.deepEqual(got.entry.tokens, range(0, 50));
    assert.equal(c.size, 1);
    assert.equal(c.bytes, 60);
    assert.equal(c.take(prompt, prompt.length - 1, 20), null, "the other shares only 20");
  });

  test("the lookup counts at most `limit` tokens", () => {
    const c = new HostPromptCache(1000);
    c.put(entry(range(0, 50)));
    assert.equal(c.take(range(0, 50), 49, 0)!.depth, 49);
  });

  test("least recently put entries go when the bytes run out; an entry larger than the budget is not kept", () => {
    const c = new HostPromptCache(100);
    c.put(entry(range(0, 10), 40));
    c.put(entry(range(100, 10), 40));
    c.put(entry(range(200, 10), 40));
    assert.equal(c.size, 2);
    assert.equal(c.bytes, 80);
    assert.equal(c.peek(range(0, 10), 9), 0, "the oldest went");
    c.put(entry(range(300, 10), 101));
    assert.equal(c.size, 2);
  });

  test("an entry whose tokens start a new one is dropped: the new one serves its prompts", () => {
    const c = new HostPromptCache(1000);
    c.put(entry(range(0, 40)));
    c.put(entry(range(0, 60)));
    assert.equal(c.size, 1);
    assert.equal(c.bytes, 60);
  });
});
