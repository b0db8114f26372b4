// The model-version admin API, what `moltbot models` drives over SSH:
//   GET  /admin/models                      every model's versions, states and last validation
//   POST /admin/models/:name/validate        {"version"?}: load it beside the serving one and run its checks
//   POST /admin/models/:name/activate        {"version"}: blue/green switch (versioned-model.ts)
//   POST /admin/models/:name/rollback        {}: back to the version served before
// A refused switch is an error in OpenAI's shape (version_not_found, switch_in_progress,
// version_invalid, validation_failed, insufficient_memory, ...) and the serving version is
// untouched.
//
// Guarded by scope `admin` when auth is on (src/auth/server-auth.ts), and who asked is the token's
// subject; without auth it is the `x-moltbot-user` header the CLI sends (the local user).
import { Type, type Static } from "@sinclair/typebox";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { AuditAction, AuditSink } from "../../audit/events.js";
import { MoltbotError } from "../../errors.js";
import { MODEL_NAME_PATTERN } from "../../repository/model-config.js";
import type { VersionedModel } from "../../versions/versioned-model.js";

const NameParams = Type.Object({ name: Type.String({ pattern: MODEL_NAME_PATTERN }) });
type NameParams = Static<typeof NameParams>;
const VersionName = Type.String({ minLength: 1, maxLength: 128, pattern: "^[A-Za-z0-9][A-Za-z0-9._+-]*$" });
const ActivateBody = Type.Object({ version: VersionName });
type ActivateBody = Static<typeof ActivateBody>;
const ValidateBody = Type.Object({ version: Type.Optional(VersionName) });
type ValidateBody = Static<typeof ValidateBody>;
const RollbackBody = Type.Object({});

const USER_HEADER = "x-moltbot-user";
const USER_PATTERN = /^[\w.@-]{1,64}$/;

/** Who asked, for the log line of a switch: the token's subject when auth is on. */
function requester(req: FastifyRequest): string {
  if (req.principal && req.principal.kind !== "anonymous") return `${req.principal.subject} (from ${req.ip})`;
  const given = req.headers[USER_HEADER];
  if (typeof given === "string" && USER_PATTERN.test(given)) return `${given} (unauthenticated, from ${req.ip})`;
  return `an unnamed client at ${req.ip}`;
}

/**
 * Runs an admin action and records it in the audit log, with its outcome ("ok" or the error
 * code; a validation that ran but did not pass: validation_failed) and the version. The user is the authenticated principal once auth sets one;
 * the CLI's x-moltbot-user header is only a claim, kept in `detail`.
 */
async function audited<T extends { version?: string; passed?: boolean }>(audit: AuditSink | undefined, req: FastifyRequest, action: AuditAction, model: string, asked: string | undefined, run: () => Promise<T>): Promise<T> {
  if (audit === undefined) return run();
  const user = req.principal?.subject ?? "unauthenticated";
  const record = (outcome: string, version: string | undefined) =>
    audit.record({ action, user, target: version === undefined ? model : `${model} ${version}`, outcome, detail: `requested as ${requester(req)}`, request_id: req.id, ip: req.ip });
  try {
    const result = await run();
    record(result.passed === false ? "validation_failed" : "ok", result.version ?? asked);
    return result;
  } catch (err) {
    record(err instanceof MoltbotError ? err.code : "internal_error", asked);
    throw err;
  }
}

export function registerModelAdminRoutes(app: FastifyInstance, models: ReadonlyMap<string, VersionedModel>, audit?: AuditSink): void {
  const modelNamed = (name: string): VersionedModel => {
    const m = models.get(name);
    if (!m) throw new MoltbotError("model_not_found", `no served model named '${name}' (served: ${[...models.keys()].join(", ")})`, { param: "name" });
    return m;
  };

  app.get("/admin/models", async () => ({ models: await Promise.all([...models.values()].map((m) => m.listing())) }));

  app.post<{ Params: NameParams; Body: ValidateBody }>("/admin/models/:name/validate", { schema: { params: NameParams, body: ValidateBody } }, async (req) =>
    audited(audit, req, "model.validate", req.params.name, req.body.version, () => modelNamed(req.params.name).validate(req.body.version, requester(req))),
  );

  app.post<{ Params: NameParams; Body: ActivateBody }>("/admin/models/:name/activate", { schema: { params: NameParams, body: ActivateBody } }, async (req) =>
    audited(audit, req, "model.activate", req.params.name, req.body.version, () => modelNamed(req.params.name).activate(req.body.version, requester(req))),
  );

  app.post<{ Params: NameParams }>("/admin/models/:name/rollback", { schema: { params: NameParams, body: RollbackBody } }, async (req) =>
    audited(audit, req, "model.rollback", req.params.name, undefined, () => modelNamed(req.params.name).rollback(requester(req))),
  );
}
