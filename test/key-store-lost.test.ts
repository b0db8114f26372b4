// Never bring revoked API keys back: keys are created and one revoked, then the key store
// (tokens.sqlite) is deleted, emptied, or replaced by a copy taken before the revoke (a restored
// backup). Each refuses the start of a real server and `moltbot token list` with key_store_lost
// and what the marker recorded; `moltbot token reset-store` accepts the store as it is, on purpose.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import type { DeepPartial } from "../src/config/load.js";
import type { MoltbotConfig } from "../src/config/schema.js";
import { ApiKeyStore, apiKeyStorePath } from "../src/auth/api-keys.js";
import type { KeyStoreMarker } from "../src/auth/key-store-marker.js";
import { makeRepository, startServer, tempDir } from "./helpers/fixtures.js";
import { runCli } from "./helpers/cli.js";

const CONFIG: DeepPartial<MoltbotConfig> = { model_pool: [{ name: "tiny" }], security: { api_keys: { enabled: true } } };

let repo: string;
before(async () => {
  repo = await makeRepository([{ name: "tiny", version: "v1.0" }]);
});

const token = (dataDir: string, ...args: string[]) => runCli(["token", ...args, "--data-dir", dataDir], { USER: "ops" });
const marker = (dataDir: string) => JSON.parse(readFileSync(path.join(dataDir, "tokens.marker.json"), "utf8")) as KeyStoreMarker;

/** Keys `ci` and `old` (the store the CLI uses, in this process: quicker), a copy of the store taken then, and `old` revoked after it. */
async function setUp(): Promise<{ dataDir: string; backup: string; keys: Record<string, string>; recorded: KeyStoreMarker; atBackup: KeyStoreMarker }> {
  const dataDir = await tempDir("moltbot-key-store-lost-");
  const keys: Record<string, string> = {};
  let store = ApiKeyStore.open(apiKeyStorePath(dataDir));
  for (const name of ["ci", "old"]) keys[name] = store.create({ name, scopes: ["inference"] }).key;
  store.close();
  assert.equal(existsSync(`${apiKeyStorePath(dataDir)}-wal`), false, "closed, the store is checkpointed: one file is the whole store");
  const backup = path.join(dataDir, "tokens.backup.sqlite");
  copyFileSync(apiKeyStorePath(dataDir), backup);
  const atBackup = marker(dataDir);
  store = ApiKeyStore.open(apiKeyStorePath(dataDir));
  assert.equal(store.revoke("old"), true);
  store.close();
  const recorded = marker(dataDir);
  assert.equal(recorded.file, "tokens.sqlite");
  assert.deepEqual([recorded.keys, recorded.revoked], [2, 1]);
  return { dataDir, backup, keys, recorded, atBackup };
}

/** Status of GET /v1/models with each key, on a real server started over dataDir. */
async function statuses(dataDir: string, keys: Record<string, string>): Promise<Record<string, number>> {
  const srv = await startServer(repo, { config: CONFIG, dataDir });
  try {
    const out: Record<string, number> = {};
    for (const [name, key] of Object.entries(keys)) out[name] = (await fetch(`${srv.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } })).status;
    return out;
  } finally {
    await srv.close();
  }
}

/** The server and `token list` both refuse, naming the file, what happened and what was recorded. */
async function refused(dataDir: string, what: string, recorded: KeyStoreMarker): Promise<void> {
  const file = apiKeyStorePath(dataDir);
  const reason = `${file} ${what}, but tokens.marker.json beside it records store ${recorded.store_id}: 2 keys, 1 revoked, last change ${recorded.last_change}, recorded ${recorded.written_at}: refusing to open it, as revoked keys could be accepted again. Restore the newest copy of the file, or accept the store as it is now with \`moltbot token reset-store\` (then revoke again any key revoked since)`;
  await assert.rejects(startServer(repo, { config: CONFIG, dataDir }), (err: Error & { code?: string }) => {
    assert.equal(err.code, "key_store_lost", err.message);
    assert.equal(err.message, reason);
    return true;
  });
  const list = await token(dataDir, "list");
  assert.equal(list.code, 1, list.stdout);
  assert.equal(list.stderr, `moltbot: error: ${reason}\n`);
}

test("a deleted key store refuses the start and `token list`; reset-store starts a new, empty one", async () => {
  const { dataDir, keys, recorded } = await setUp();
  rmSync(apiKeyStorePath(dataDir));
  await refused(dataDir, "is missing", recorded);
  assert.equal(existsSync(apiKeyStorePath(dataDir)), false, "the refused opens created no new store");

  const reset = await token(dataDir, "reset-store");
  assert.equal(reset.code, 0, reset.stderr);
  assert.match(reset.stdout, new RegExp(`^Accepted the API key store [0-9a-f-]{36} in .*tokens\\.sqlite \\(0 keys, 0 revoked\\) by 'ops'; the marker recorded store ${recorded.store_id}: 2 keys, 1 revoked`));
  assert.notEqual(marker(dataDir).store_id, recorded.store_id);
  assert.equal((await token(dataDir, "list")).stdout, "No API keys.\n");
  assert.deepEqual(await statuses(dataDir, keys), { ci: 401, old: 401 }, "the lost keys are gone: issue new ones");
});

test("a store without a marker (from before markers, or the marker deleted) is adopted; emptied, it is refused the same way", async () => {
  const { dataDir, recorded } = await setUp();
  rmSync(path.join(dataDir, "tokens.marker.json"));
  const list = await token(dataDir, "list", "--json");
  assert.equal(list.code, 0, list.stderr);
  assert.equal((JSON.parse(list.stdout) as unknown[]).length, 2);
  const adopted = marker(dataDir);
  assert.deepEqual([adopted.store_id, adopted.keys, adopted.revoked, adopted.last_change], [recorded.store_id, 2, 1, recorded.last_change]);

  execFileSync("sh", ["-c", `: > "${apiKeyStorePath(dataDir)}"`]);
  await refused(dataDir, "is empty", adopted);
});

test("an older copy of the key store (restored from before a revoke) is refused; reset-store keeps it on purpose", async () => {
  const { dataDir, backup, keys, recorded, atBackup } = await setUp();
  copyFileSync(backup, apiKeyStorePath(dataDir));
  await refused(dataDir, `is an older copy (0 revoked, last change ${atBackup.last_change})`, recorded);

  const reset = await token(dataDir, "reset-store");
  assert.equal(reset.code, 0, reset.stderr);
  assert.match(reset.stdout, new RegExp(`^Accepted the API key store ${recorded.store_id} in .*tokens\\.sqlite \\(2 keys, 0 revoked\\) by 'ops'; the marker recorded store ${recorded.store_id}: 2 keys, 1 revoked`));
  assert.match(reset.stderr, /Revoke again \(moltbot token revoke NAME\) any key revoked since this copy was made/);
  assert.deepEqual([marker(dataDir).keys, marker(dataDir).revoked], [2, 0]);
  assert.deepEqual(await statuses(dataDir, keys), { ci: 200, old: 200 }, "the operator accepted the copy as it is");
  assert.equal((await token(dataDir, "revoke", "old")).code, 0);
  assert.deepEqual(await statuses(dataDir, keys), { ci: 200, old: 401 });
});
