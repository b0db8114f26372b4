// The OpenAI-compatible API end to end: the official `openai` client against the real server,
// real worker processes and tiny generated models.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { makeRepository, startServer, type RunningServer } from "./helpers/fixtures.js";

let srv: RunningServer;
let client: OpenAI;

before(async () => {
  const repo = await makeRepository([
    { name: "tiny", version: "v1.0" },
    { name: "tiny", version: "v1.10" },
    { name: "tiny-embed", version: "v1.0", type: "embedding" },
  ]);
  srv = await startServer(repo);
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => srv?.close());

async function post(path: string, body: string, headers: Record<string, string> = { "content-type": "application/json" }) {
  const res = await fetch(`${srv.url}${path}`, { method: "POST", headers, body });
  return { status: res.status, body: (await res.json()) as { error?: { message: string; type: string; code: string; param: string | null } } & Record<string, unknown> };
}

describe("models", () => {
  test("lists every served model with the version chosen by semantic order", async () => {
    const models = await client.models.list();
    const byId = new Map(models.data.map((m) => [m.id, m as unknown as Record<string, unknown>]));
    assert.deepEqual([...byId.keys()].sort(), ["tiny", "tiny-embed"]);
    assert.equal(byId.get("tiny")!.version, "v1.10", "v1.10 is newer than v1.0");
    assert.equal(byId.get("tiny-embed")!.type, "embedding");
  });
});

describe("chat completions", () => {
  test("plain request returns a message and fills usage", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hello there" }], max_tokens: 6, temperature: 0 });
    assert.equal(r.object, "chat.completion");
    assert.equal(r.model, "tiny");
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0]!.message.role, "assistant");
    assert.equal(typeof r.choices[0]!.message.content, "string");
    assert.ok(["stop", "length"].includes(r.choices[0]!.finish_reason));
    assert.ok(r.usage!.prompt_tokens > 0);
    assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 6);
    assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + r.usage!.completion_tokens);
  });

  test("greedy decoding is deterministic and the stream equals the whole response", async () => {
    const req = { model: "tiny", messages: [{ role: "user" as const, content: "Tell me a story" }], max_tokens: 12, temperature: 0, ignore_eos: true };
    const whole = await client.chat.completions.create(req as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } } as OpenAI.ChatCompletionCreateParamsStreaming);
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (!c) continue;
      text += c.delta.content ?? "";
      finish = c.finish_reason ?? finish;
    }
    assert.ok(chunks > 3, "streamed in several chunks");
    assert.equal(text, whole.choices[0]!.message.content);
    assert.equal(finish, "length");
    assert.equal(usage?.completion_tokens, 12);
    assert.equal(whole.usage?.completion_tokens, 12);
  });

  test("a fixed seed reproduces a sampled completion", async () => {
    const req = { model: "tiny", messages: [{ role: "user" as const, content: "Once upon" }], max_tokens: 10, temperature: 1, seed: 42, ignore_eos: true };
    const a = await client.chat.completions.create(req as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const b = await client.chat.completions.create(req as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.equal(a.choices[0]!.message.content, b.choices[0]!.message.content);
  });

  test("logprobs are real engine values", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const content = r.choices[0]!.logprobs!.content!;
    assert.equal(content.length, 4);
    for (const t of content) {
      assert.ok(t.logprob <= 0 && Number.isFinite(t.logprob));
      assert.equal(t.top_logprobs.length, 3);
      for (let i = 1; i < 3; i++) assert.ok(t.top_logprobs[i - 1]!.logprob >= t.top_logprobs[i]!.logprob, "top sorted");
      // greedy: the chosen token is the most likely one
      assert.ok(Math.abs(t.logprob - t.top_logprobs[0]!.logprob) < 1e-4);
    }
    assert.equal(content.map((t) => t.token).join(""), r.choices[0]!.message.content);
  });

  test("min_tokens and max_tokens bound the completion", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "x" }], max_tokens: 5, min_tokens: 5, temperature: 0 } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.equal(r.usage!.completion_tokens, 5);
    assert.equal(r.choices[0]!.finish_reason, "length");
  });
});

describe("prompt cache", () => {
  test("a repeated prefix is reported in usage.prompt_tokens_details.cached_tokens; cache_prompt false opts out", async () => {
    const context = "The committee met on Monday to review the budget. ".repeat(3);
    const ask = (question: string, extra: Record<string, unknown> = {}) =>
      client.chat.completions.create({ model: "tiny", messages: [{ role: "system", content: context }, { role: "user", content: question }], max_tokens: 4, temperature: 0, ...extra } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const first = await ask("What was decided?");
    const second = await ask("Who attended?");
    assert.ok(second.usage!.prompt_tokens_details!.cached_tokens! > 30, `cached ${second.usage!.prompt_tokens_details!.cached_tokens} of ${second.usage!.prompt_tokens}`);
    assert.ok(second.usage!.prompt_tokens_details!.cached_tokens! < second.usage!.prompt_tokens);
    assert.equal(typeof first.usage!.prompt_tokens_details!.cached_tokens, "number");
    // `cache: false`: the same greedy request again would be a response-cache hit, not a run.
    const optOut = await ask("Who attended?", { cache_prompt: false, cache: false });
    assert.equal(optOut.usage!.prompt_tokens_details!.cached_tokens, 0);
    assert.equal(optOut.choices[0]!.message.content, second.choices[0]!.message.content, "greedy output does not depend on reuse");
  });

  test("streamed usage carries cached_tokens too", async () => {
    const prompt = "Once upon a time there was a village by the sea. ".repeat(3);
    await client.completions.create({ model: "tiny", prompt: prompt + "A", max_tokens: 2 });
    const stream = await client.completions.create({ model: "tiny", prompt: prompt + "B", max_tokens: 2, stream: true, stream_options: { include_usage: true } });
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    assert.ok(usage!.prompt_tokens_details!.cached_tokens! > 20);
  });
});

describe("completions", () => {
  test("legacy completions with stop strings never show the stop text", async () => {
    const probe = await client.completions.create({ model: "tiny", prompt: "The weather", max_tokens: 20, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    const text = probe.choices[0]!.text;
    assert.ok(text.length >= 4, "probe produced text");
    const stopAt = text.slice(2, 4);
    const r = await client.completions.create({ model: "tiny", prompt: "The weather", max_tokens: 20, temperature: 0, ignore_eos: true, stop: [stopAt] } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.equal(r.choices[0]!.finish_reason, "stop");
    assert.equal(r.choices[0]!.text, text.slice(0, text.indexOf(stopAt)));
  });

  test("streamed completions end with finish_reason and usage", async () => {
    const stream = await client.completions.create({ model: "tiny", prompt: "Hello", max_tokens: 7, temperature: 0, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
    let text = "";
    let last: OpenAI.Completion | undefined;
    for await (const c of stream) {
      text += c.choices[0]?.text ?? "";
      last = c;
    }
    assert.equal(last?.choices[0]?.finish_reason, "length");
    assert.equal(last?.usage?.completion_tokens, 7);
    assert.ok(text.length > 0);
  });

  test("legacy logprobs carry tokens and offsets", async () => {
    const r = await client.completions.create({ model: "tiny", prompt: "Hi", max_tokens: 3, temperature: 0, logprobs: 2, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    const lp = r.choices[0]!.logprobs!;
    assert.equal(lp.tokens!.length, 3);
    assert.equal(lp.token_logprobs!.length, 3);
    assert.equal(Object.keys(lp.top_logprobs![0]!).length <= 2, true);
    assert.equal(lp.tokens!.join(""), r.choices[0]!.text);
  });
});

describe("embeddings", () => {
  test("embeds through the official client (base64 by default) as unit vectors", async () => {
    const r = await client.embeddings.create({ model: "tiny-embed", input: ["hello world", "goodbye"] });
    assert.equal(r.data.length, 2);
    for (const d of r.data) {
      assert.equal(d.embedding.length, 64);
      const norm = Math.hypot(...d.embedding);
      assert.ok(Math.abs(norm - 1) < 1e-3, `unit length, got ${norm}`);
    }
    assert.notDeepEqual(r.data[0]!.embedding, r.data[1]!.embedding);
    assert.ok(r.usage.prompt_tokens > 2);
    const f = await client.embeddings.create({ model: "tiny-embed", input: "hello world", encoding_format: "float" });
    for (let i = 0; i < 64; i++) assert.ok(Math.abs(f.data[0]!.embedding[i]! - r.data[0]!.embedding[i]!) < 1e-5);
  });

  test("a generation model cannot embed", async () => {
    await assert.rejects(client.embeddings.create({ model: "tiny", input: "x" }), (err: InstanceType<typeof OpenAI.APIError>) => err.status === 400 && /cannot embed/.test(err.message));
  });
});

describe("/infer (the seed's route)", () => {
  test("returns output, model and usage", async () => {
    const r = await post("/infer", JSON.stringify({ input: "The cat", max_tokens: 5 }));
    assert.equal(r.status, 200);
    assert.equal(typeof r.body.output, "string");
    assert.equal(r.body.model, "tiny");
    const usage = r.body.usage as { prompt_tokens: number; completion_tokens: number };
    assert.ok(usage.prompt_tokens > 0 && usage.completion_tokens <= 5);
  });
});

describe("bad input", () => {
  test("malformed JSON is a 400 in OpenAI's error shape", async () => {
    const r = await post("/v1/chat/completions", "{not json");
    assert.equal(r.status, 400);
    assert.equal(r.body.error?.type, "invalid_request_error");
    assert.equal(r.body.error?.code, "invalid_json");
  });

  test("a wrong type names the field", async () => {
    const r = await post("/v1/chat/completions", JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "x" }], temperature: "hot" }));
    assert.equal(r.status, 400);
    assert.match(r.body.error!.message, /temperature/);
    assert.equal(r.body.error!.param, "temperature");
  });

  test("a missing field names the field", async () => {
    const r = await post("/v1/chat/completions", JSON.stringify({ model: "tiny" }));
    assert.equal(r.status, 400);
    assert.match(r.body.error!.message, /messages/);
    const bad = await post("/v1/chat/completions", JSON.stringify({ model: "tiny", messages: [{ role: "wizard", content: "x" }] }));
    assert.equal(bad.status, 400);
    assert.match(bad.body.error!.message, /messages\[0\]\.role/);
  });

  test("cache_prompt of the wrong type names the field", async () => {
    const r = await post("/v1/completions", JSON.stringify({ model: "tiny", prompt: "x", cache_prompt: "yes" }));
    assert.equal(r.status, 400);
    assert.equal(r.body.error!.param, "cache_prompt");
    assert.match(r.body.error!.message, /cache_prompt/);
  });

  test("n > 1 is refused clearly; unknown fields are ignored", async () => {
    const r = await post("/v1/chat/completions", JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "x" }], n: 2 }));
    assert.equal(r.status, 400);
    assert.equal(r.body.error!.param, "n");
    const ok = await post("/v1/chat/completions", JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "x" }], max_tokens: 2, some_future_field: { a: 1 } }));
    assert.equal(ok.status, 200);
  });

  test("an unknown model is a 404 through the official client", async () => {
    await assert.rejects(client.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] }), (err: InstanceType<typeof OpenAI.APIError>) => err.status === 404 && err.code === "model_not_found");
  });

  test("an oversize body is a 413", async () => {
    const r = await post("/v1/completions", JSON.stringify({ model: "tiny", prompt: "x".repeat(2 * 1024 * 1024) }));
    assert.equal(r.status, 413);
    assert.equal(r.body.error?.code, "payload_too_large");
  });

  test("a prompt longer than the context is a 400", async () => {
    const r = await post("/v1/completions", JSON.stringify({ model: "tiny", prompt: "word ".repeat(2000), max_tokens: 4 }));
    assert.equal(r.status, 400);
    assert.equal(r.body.error?.code, "context_length_exceeded");
  });

  test("an unknown route is a 404 in the same shape", async () => {
    const res = await fetch(`${srv.url}/v1/nothing`);
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, "route_not_found");
  });

  test("the server still serves after all of the above", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "still there?" }], max_tokens: 3 });
    assert.equal(r.choices.length, 1);
    const ready = await fetch(`${srv.url}/readyz`);
    assert.equal(ready.status, 200);
  });
});

describe("model versions", () => {
  const VERSION = "x-moltbot-model-version";

  test("every inference response names the version that served it, streamed or whole", async () => {
    const chat = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 2 }).withResponse();
    assert.equal(chat.response.headers.get(VERSION), "v1.10");
    const completion = await client.completions.create({ model: "tiny", prompt: "Hi", max_tokens: 2 }).withResponse();
    assert.equal(completion.response.headers.get(VERSION), "v1.10");
    const embedding = await client.embeddings.create({ model: "tiny-embed", input: "Hi" }).withResponse();
    assert.equal(embedding.response.headers.get(VERSION), "v1.0");

    // A stream's headers go out when it starts, before the first token.
    const streamed = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], max_tokens: 2, stream: true }).withResponse();
    assert.equal(streamed.response.headers.get(VERSION), "v1.10");
    for await (const _ of streamed.data);
    const streamedText = await client.completions.create({ model: "tiny", prompt: "Hi", max_tokens: 2, stream: true }).withResponse();
    assert.equal(streamedText.response.headers.get(VERSION), "v1.10");
    for await (const _ of streamedText.data);

    const res = await fetch(`${srv.url}/infer`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: "Hi", max_tokens: 2 }) });
    const infer = (await res.json()) as Record<string, unknown>;
    assert.equal(res.headers.get(VERSION), "v1.10");
    assert.equal(infer.version, "v1.10");
    assert.equal(infer.model, "tiny");
  });

  test("a refused request names no version", async () => {
    const res = await fetch(`${srv.url}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "nope", prompt: "Hi" }) });
    assert.equal(res.status, 404);
    assert.equal(res.headers.get(VERSION), null);
  });

  test("/v1/models and /v1/models/{id} give each entry's active version beside OpenAI's fields", async () => {
    const list = await client.models.list();
    for (const m of list.data) {
      assert.equal(m.object, "model");
      assert.equal(m.owned_by, "moltbot");
      assert.equal(typeof m.created, "number");
      assert.equal((m as unknown as { version: string }).version, m.id === "tiny" ? "v1.10" : "v1.0");
    }
    const one = await client.models.retrieve("tiny");
    assert.equal((one as unknown as { version: string }).version, "v1.10");
  });
});
