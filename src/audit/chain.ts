// The audit file's record format and its hash chain. One record is one JSON line:
//   {"seq":7,"time":"2026-11-30T07:00:00.000Z","prev":"<hash of record 6>", ...event...,"hash":"<sha256>"}
// `hash` is the SHA-256 of the line's own bytes without the `hash` member (the JSON text up to
// it, closed with "}"), so an edited line is found at that very line; `prev` links it to the
// record before, so a deleted, inserted or reordered line breaks the link where it happened.
// Hashing the bytes as written (not a re-serialization) keeps verify exact whatever JSON does
// with numbers or escapes.
import { hash } from "node:crypto";

/** `prev` of the very first record. */
export const GENESIS = "0".repeat(64);

const SUFFIX = /,"hash":"([0-9a-f]{64})"\}$/;
const SUFFIX_LENGTH = ',"hash":"'.length + 64 + '"}'.length;

// crypto.hash (one shot, Node >= 20.12) costs half of createHash().update().digest() per record.
export function sha256(text: string): string {
  return hash("sha256", text, "hex");
}

/** The line of a record (its members in insertion order, `hash` appended) and its hash. */
export function sealRecord(body: Record<string, unknown>): { line: string; hash: string } {
  const json = JSON.stringify(body);
  const digest = sha256(json);
  return { line: `${json.slice(0, -1)},"hash":"${digest}"}`, hash: digest };
}

export interface OpenedRecord {
  seq: number;
  time: string;
  prev: string;
  hash: string;
  /** The record as parsed, every member. */
  record: Record<string, unknown>;
}

/** A line read back: the record, or why it is not a sound one. */
export function openRecord(line: string): OpenedRecord | { problem: string } {
  const m = SUFFIX.exec(line);
  if (m === null) return { problem: "not a sealed record (no trailing hash member)" };
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return { problem: "not valid JSON" };
  }
  const hash = m[1]!;
  if (sha256(`${line.slice(0, -SUFFIX_LENGTH)}}`) !== hash) return { problem: "altered: its content does not match its hash" };
  const { seq, time, prev } = record;
  if (!Number.isSafeInteger(seq) || typeof time !== "string" || typeof prev !== "string") return { problem: "missing seq, time or prev" };
  return { seq: seq as number, time, prev, hash, record };
}
