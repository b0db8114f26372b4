// better-sqlite3, typed: the subset of its API the stores use (the ledger, the API keys, the
// audit keys). The package ships no type declarations and @types/better-sqlite3 is not a
// dependency, so it is loaded through require and typed here, once.
import { createRequire } from "node:module";

export interface Statement {
  run(...params: unknown[]): { changes: number };
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
}

export interface Transaction<A extends unknown[], R> {
  immediate(...args: A): R;
}

export interface Database {
  pragma(source: string, options?: { simple: boolean }): unknown;
  exec(source: string): void;
  prepare(source: string): Statement;
  transaction<A extends unknown[], R>(fn: (...args: A) => R): Transaction<A, R>;
  close(): void;
}

export interface OpenOptions {
  /** Milliseconds to wait for a lock held by another connection. */
  timeout?: number;
  readonly?: boolean;
  fileMustExist?: boolean;
}

type DatabaseConstructor = new (file: string, options?: OpenOptions) => Database;

export const Sqlite = createRequire(import.meta.url)("better-sqlite3") as DatabaseConstructor;
