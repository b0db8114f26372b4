// What the audit log records (PRODUCT.md 4.3): every request and every admin action. The
// writer (./audit-log.ts) chains the records; producers call `record` and never wait for disk.

export type AuditAction =
  | "request"
  | "model.activate"
  | "model.rollback"
  | "model.validate"
  | "budget.reset"
  | "token.create"
  | "token.revoke"
  | "token.reset-store"
  | "config.reload"
  | "audit.erase";

export interface AuditEvent {
  action: AuditAction;
  /** The principal's subject ("anonymous" with auth off; the OS user for a local CLI action). */
  user: string;
  /** Request events: method, route (the URL path), status, client address, request id. */
  method?: string;
  route?: string;
  status?: number;
  ip?: string;
  request_id?: string;
  /** Inference: the pool entry, the version that served, tokens and cost. */
  model?: string;
  version?: string;
  prompt_tokens?: number;
  completion_tokens?: number;
  cost?: number;
  /** Admin actions: what was acted on and how it ended ("ok" or the error code). */
  target?: string;
  outcome?: string;
  detail?: string;
  /** Prompt and completion text, only with audit.include_content. */
  content?: { prompt?: string; completion?: string };
}

/** Where events go. `record` never throws and never blocks on disk. */
export interface AuditSink {
  record(event: AuditEvent): void;
}
