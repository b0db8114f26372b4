// The lifecycle of one model worker (model-worker.ts) and its legal transitions.
//
//   spawning ──'spawn'──▶ loading ──"ready"──▶ ready ──silent──▶ unhealthy
//     ▲   │                 │   │                │                  │
//     │   │  first start    │   │ exit after     │ exit             │ exit (SIGKILLed)
//     │   └─ cannot spawn ──┤   │ a restart (*)  ▼                  │
//     │      or load        ▼   └──────────────▶ crashed ◀──────────┘
//     │                   failed                  │
//     └────── backoff ────── restarting ◀─────────┘
//
//   close():  spawning | loading | ready | unhealthy ──▶ draining ──exit──▶ stopped
//             restarting | crashed | failed ─────────────────────────────▶ stopped
//
//   (*) spawning → crashed too: a restarted process that exits before or while loading.
//   crashed → failed: killed by its memory limit MAX_OOM_KILLS times in a row (model-worker.ts).
//
// Live states (a process exists or is being created): spawning, loading, ready, unhealthy.
// A first start that cannot spawn or load is `failed` (a bad model is the operator's to fix,
// not to retry); after the worker was ready once, any exit of a live state is `crashed`, which
// restarts it with backoff. `close()` drains a live worker (`draining`, then `stopped` when the
// process has exited) and stops one without a process at once.

export type WorkerState = "spawning" | "loading" | "ready" | "unhealthy" | "crashed" | "restarting" | "draining" | "stopped" | "failed";

/** The states a worker may move to from each state; anything else is a bug and refused. */
export const WORKER_TRANSITIONS: { readonly [S in WorkerState]: readonly WorkerState[] } = {
  spawning: ["loading", "failed", "crashed", "draining"],
  loading: ["ready", "failed", "crashed", "draining"],
  ready: ["unhealthy", "crashed", "draining"],
  unhealthy: ["crashed", "draining"],
  crashed: ["restarting", "stopped", "failed"],
  restarting: ["spawning", "stopped"],
  draining: ["stopped"],
  failed: ["stopped"],
  stopped: [],
};

export function canTransition(from: WorkerState, to: WorkerState): boolean {
  return WORKER_TRANSITIONS[from].includes(to);
}

/** A worker in these states has (or is creating) a process; close() drains it. */
export function isLive(state: WorkerState): boolean {
  return state === "spawning" || state === "loading" || state === "ready" || state === "unhealthy";
}

/** States a worker never leaves for `ready` again: waiting for readiness ends there. */
export function isFinal(state: WorkerState): boolean {
  return state === "draining" || state === "stopped" || state === "failed";
}
