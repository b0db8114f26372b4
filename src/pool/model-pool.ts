// The set of served models, by the name clients put in `model`. Budgets, priorities and
// fallback arrive here later; today it resolves a name to the worker that serves it.
import { MoltbotError } from "../errors.js";
import type { ModelWorker } from "../workers/model-worker.js";
import type { RepositoryModel } from "../repository/repository.js";

export interface PoolEntry {
  name: string;
  type: "llm" | "embedding";
  model: RepositoryModel;
  worker: ModelWorker;
  /** Epoch seconds the entry was created (OpenAI's `created`). */
  created: number;
}

export class ModelPool {
  private readonly byName = new Map<string, PoolEntry>();

  constructor(readonly entries: PoolEntry[]) {
    for (const e of entries) this.byName.set(e.name, e);
  }

  /** The entry for `name`; without a name, the first model of the wanted type. */
  resolve(name: string | undefined, type: "llm" | "embedding"): PoolEntry {
    if (name === undefined) {
      const e = this.entries.find((x) => x.type === type);
      if (e) return e;
      throw new MoltbotError("model_not_found", `no ${type === "llm" ? "generation" : "embedding"} model is served here; pass "model"`, { param: "model" });
    }
    const e = this.byName.get(name);
    if (!e) {
      const known = this.entries.map((x) => x.name).join(", ");
      throw new MoltbotError("model_not_found", `The model '${name}' does not exist (served: ${known})`, { param: "model" });
    }
    if (e.type !== type) {
      throw new MoltbotError(
        type === "embedding" ? "model_not_embedding" : "invalid_request",
        type === "embedding" ? `model '${name}' is a generation model and cannot embed; use an embedding model` : `model '${name}' is an embedding model and cannot generate text`,
        { param: "model" },
      );
    }
    return e;
  }

  isReady(): boolean {
    return this.entries.some((e) => e.worker.isReady());
  }
}
