// Structured outputs end to end: `response_format` and `grammar` through the official `openai`
// client against the real server. The tiny random model knows no JSON, which is the point:
// with a schema even it must answer with JSON that parses and validates (ajv, draft 2020-12).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import OpenAI from "openai";
import { Ajv2020 } from "ajv/dist/2020.js";
import { makeRepository, startServer, type RunningServer } from "./helpers/fixtures.js";

let srv: RunningServer;
let client: OpenAI;
const ajv = new Ajv2020({ strict: false });

before(async () => {
  const repo = await makeRepository([{ name: "tiny", version: "v1.0", parallel: 4, contextSize: 512 }]);
  srv = await startServer(repo);
  client = new OpenAI({ baseURL: srv.baseURL, apiKey: "unused", maxRetries: 0 });
});
after(async () => srv?.close());

const messages = [{ role: "user" as const, content: "Describe a person as JSON." }];

async function structured(schema: Record<string, unknown>, seed: number) {
  const r = await client.chat.completions.create({
    model: "tiny",
    messages,
    max_tokens: 400,
    temperature: 1,
    seed,
    response_format: { type: "json_schema", json_schema: { name: "answer", schema, strict: true } },
  });
  return r.choices[0]!;
}

function assertValid(schema: Record<string, unknown>, text: string): unknown {
  const value = JSON.parse(text) as unknown;
  const validate = ajv.compile(schema);
  assert.ok(validate(value), `${text} does not validate: ${ajv.errorsText(validate.errors)}`);
  return value;
}

const name = { type: "string", maxLength: 12 };
const SCHEMAS: Record<string, Record<string, unknown>> = {
  flat: { type: "object", properties: { name, age: { type: "integer" }, active: { type: "boolean" }, score: { type: "number" } }, required: ["name", "age", "active", "score"], additionalProperties: false },
  nested: {
    type: "object",
    properties: { person: { type: "object", properties: { name, address: { type: "object", properties: { city: name, zip: { type: "string", minLength: 5, maxLength: 5 } }, required: ["city", "zip"] } }, required: ["name", "address"] } },
    required: ["person"],
  },
  enums: { type: "object", properties: { color: { enum: ["red", "green", "blue"] }, size: { type: "string", enum: ["S", "M", "L"] }, level: { enum: [1, 2, 3, null] }, kind: { const: "fixed" } }, required: ["color", "size", "level", "kind"] },
  arrays: {
    type: "object",
    properties: { tags: { type: "array", items: { type: "string", maxLength: 6 }, minItems: 2, maxItems: 4 }, pair: { type: "array", prefixItems: [{ type: "integer" }, { type: "boolean" }], minItems: 2, maxItems: 2 } },
    required: ["tags", "pair"],
  },
  refs: {
    type: "object",
    properties: { home: { $ref: "#/$defs/place" }, work: { $ref: "#/$defs/place" }, nickname: { anyOf: [name, { type: "null" }] } },
    required: ["home", "work", "nickname"],
    $defs: { place: { type: "object", properties: { city: name, floor: { type: ["integer", "null"] } }, required: ["city", "floor"] } },
  },
  recursive: {
    $ref: "#/$defs/node",
    $defs: { node: { type: "object", properties: { value: { type: "integer" }, next: { anyOf: [{ type: "null" }, { $ref: "#/$defs/node" }] } }, required: ["value", "next"] } },
  },
};

describe("response_format json_schema", () => {
  for (const [kind, schema] of Object.entries(SCHEMAS)) {
    test(`${kind}: every answer parses and validates`, async () => {
      const choices = await Promise.all([1, 2, 3].map((seed) => structured(schema, seed)));
      for (const c of choices) {
        assert.equal(c.finish_reason, "stop", `the grammar completes and the model stops: ${c.message.content}`);
        assertValid(schema, c.message.content!);
      }
    });
  }

  test("greedy decoding too (the random model's own favourite tokens are not JSON)", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 400, temperature: 0, response_format: { type: "json_schema", json_schema: { name: "a", schema: SCHEMAS.flat! } } });
    assertValid(SCHEMAS.flat!, r.choices[0]!.message.content!);
  });

  test("a streamed constrained answer concatenates to valid JSON", async () => {
    const stream = await client.chat.completions.create({
      model: "tiny", messages, max_tokens: 400, temperature: 1, seed: 7, stream: true,
      response_format: { type: "json_schema", json_schema: { name: "a", schema: SCHEMAS.nested! } },
    });
    let text = "";
    let chunks = 0;
    let finish: string | null = null;
    for await (const chunk of stream) {
      chunks++;
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.ok(chunks > 3);
    assert.equal(finish, "stop");
    assertValid(SCHEMAS.nested!, text);
  });

  test("max_tokens cutting the JSON short is finish_reason length", async () => {
    const r = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 3, response_format: { type: "json_schema", json_schema: { name: "a", schema: SCHEMAS.flat! } } });
    assert.equal(r.choices[0]!.finish_reason, "length");
    assert.throws(() => JSON.parse(r.choices[0]!.message.content!));
  });

  test("constrained and unconstrained requests share the batch", async () => {
    const plain = client.chat.completions.create({ model: "tiny", messages, max_tokens: 40, temperature: 0, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const constrained = structured(SCHEMAS.arrays!, 11);
    const [p, c] = await Promise.all([plain, constrained]);
    assert.equal(p.usage!.completion_tokens, 40);
    assertValid(SCHEMAS.arrays!, c.message.content!);
  });
});

test("strict: false is constrained all the same", async () => {
  const schema = { type: "object", properties: { name: { type: "string", maxLength: 12 }, age: { type: "integer" } }, required: ["name"], additionalProperties: false };
  const r = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 200, temperature: 1, seed: 3, response_format: { type: "json_schema", json_schema: { name: "p", schema, strict: false } } });
  // Every property is written, optional ones too (the converter cannot leave one out).
  assert.deepEqual(Object.keys(assertValid(schema, r.choices[0]!.message.content!) as object).sort(), ["age", "name"]);
});

describe("json_object and grammar", () => {
  test("json_object answers parse as an object", async () => {
    let finished = 0;
    for (const seed of [1, 2, 3, 4, 5]) {
      const r = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 300, temperature: 1, seed, response_format: { type: "json_object" } });
      const c = r.choices[0]!;
      if (c.finish_reason === "length") continue; // any JSON object may be long: only a finished one must parse
      finished++;
      const v = JSON.parse(c.message.content!) as unknown;
      assert.ok(typeof v === "object" && v !== null && !Array.isArray(v), c.message.content!);
    }
    assert.ok(finished >= 2, `${finished} of 5 objects closed within 300 tokens`);
  });

  test("a raw GBNF grammar on chat and on completions", async () => {
    const grammar = 'root ::= ("yes" | "no") " " [0-9]{2}';
    const chat = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 20, grammar } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.match(chat.choices[0]!.message.content!, /^(yes|no) \d\d$/);
    assert.equal(chat.choices[0]!.finish_reason, "stop");
    const completion = await client.completions.create({ model: "tiny", prompt: "Answer:", max_tokens: 20, grammar } as OpenAI.CompletionCreateParamsNonStreaming);
    assert.match(completion.choices[0]!.text, /^(yes|no) \d\d$/);
  });

  test("response_format on completions", async () => {
    const r = await client.completions.create({ model: "tiny", prompt: "JSON:", max_tokens: 400, response_format: { type: "json_schema", json_schema: { name: "a", schema: SCHEMAS.enums! } } } as OpenAI.CompletionCreateParamsNonStreaming);
    assertValid(SCHEMAS.enums!, r.choices[0]!.text);
  });
});

describe("refusals", () => {
  async function refused(body: Record<string, unknown>) {
    const err = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 20, ...body } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming).then(
      () => assert.fail("expected a 400"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof OpenAI.APIError);
    assert.equal(err.status, 400);
    return err.error as { message: string; code: string; param: string | null };
  }
  const withSchema = (schema: unknown) => ({ response_format: { type: "json_schema", json_schema: { name: "a", schema } } });

  test("a grammar that does not parse is a 400 with llama.cpp's reason", async () => {
    const e = await refused({ grammar: 'root ::= "open' });
    assert.equal(e.code, "invalid_grammar");
    assert.match(e.message, /unexpected end of input/);
    const undef = await refused({ grammar: "root ::= value" });
    assert.match(undef.message, /value/);
    // The worker survived both: a plain request still works.
    const ok = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 2 });
    assert.ok(ok.choices[0]);
  });

  test("a grammar no token can follow fails that request, not the worker", async () => {
    // U+D800 is a surrogate: its bytes are not UTF-8, which constrained text never holds.
    const e = await refused({ grammar: "root ::= [\\uD800]" });
    assert.equal(e.code, "invalid_grammar");
    assert.match(e.message, /allows no token/);
    const ok = await client.chat.completions.create({ model: "tiny", messages, max_tokens: 2 });
    assert.ok(ok.choices[0]);
  });

  test("keywords a grammar cannot enforce are a 400 naming them", async () => {
    const e = await refused(withSchema({ type: "object", properties: { a: { type: "string", pattern: "^x" }, b: { type: "object", patternProperties: { "^y": { type: "string" } } }, n: { type: "number", minimum: 0 } } }));
    assert.equal(e.code, "unsupported_parameter");
    assert.equal(e.param, "response_format.json_schema.schema");
    for (const k of ["properties.a.pattern", "properties.b.patternProperties", "properties.n.minimum"]) assert.ok(e.message.includes(k), `${k} named in: ${e.message}`);
    const format = await refused(withSchema({ type: "string", format: "email" }));
    assert.match(format.message, /format.*email/);
  });

  test("a schema that is not JSON Schema is a 400 naming the field", async () => {
    const e = await refused(withSchema({ type: "object", properties: { a: { type: "strnig" } } }));
    assert.equal(e.code, "invalid_schema");
    assert.equal(e.param, "response_format.json_schema.schema");
    assert.match(e.message, /properties\.a\.type/);
  });

  test("a $ref cycle without an end is a 400 naming it", async () => {
    const e = await refused(withSchema({ $ref: "#/$defs/loop", $defs: { loop: { type: "object", properties: { next: { $ref: "#/$defs/loop" } }, required: ["next"] } } }));
    assert.equal(e.code, "invalid_schema");
    assert.match(e.message, /#\/\$defs\/loop/);
  });

  test("grammar with response_format, or with ignore_eos, is refused", async () => {
    assert.equal((await refused({ grammar: 'root ::= "a"', response_format: { type: "json_object" } })).param, "grammar");
    assert.match((await refused({ grammar: 'root ::= "a"', ignore_eos: true })).message, /ignore_eos/);
    assert.equal((await refused({ response_format: { type: "xml" } })).param, "response_format.type");
  });

  test("the main process never loaded llama.cpp for the converter", () => {
    const maps = readFileSync("/proc/self/maps", "utf8");
    assert.doesNotMatch(maps, /libllama|llama-addon|libggml/);
  });
});
