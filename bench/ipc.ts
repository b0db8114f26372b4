// What one per-token IPC message costs: a child process sends `text` messages shaped exactly
// like a worker's, the parent receives them; per-message time for both serializations.
//
//   node --import tsx bench/ipc.ts [--messages 100000]
import { fork } from "node:child_process";
import { parseArgs } from "node:util";
import { commandLine, machine } from "./lib.js";

if (process.env.MOLTBOT_IPC_BENCH_CHILD) {
  const n = Number(process.env.MOLTBOT_IPC_BENCH_CHILD);
  process.once("message", () => {
    const t0 = performance.now();
    let i = 0;
    // Send in bursts, yielding between them as the worker's decode loop does between steps.
    const burst = () => {
      for (let k = 0; k < 100 && i < n; k++, i++) process.send!({ type: "text", id: 7, text: " the" });
      if (i < n) setImmediate(burst);
      else process.send!({ type: "end", sendMs: performance.now() - t0 });
    };
    burst();
  });
} else {
  const { values } = parseArgs({ options: { messages: { type: "string", default: "100000" } } });
  const n = Number(values.messages);
  console.log(`# bench/ipc.ts — ${new Date().toISOString()}\nmachine: ${machine()}\ncommand: ${commandLine()}`);
  for (const serialization of ["advanced", "json"] as const) {
    const child = fork(new URL(import.meta.url).pathname, [], { serialization, execArgv: process.execArgv, env: { ...process.env, MOLTBOT_IPC_BENCH_CHILD: String(n) } });
    let received = 0;
    const t0 = performance.now();
    const sendMs = await new Promise<number>((resolve) => {
      child.on("message", (m: { type: string; sendMs?: number }) => {
        if (m.type === "end") resolve(m.sendMs!);
        else received++;
      });
      child.send("go");
    });
    const totalMs = performance.now() - t0;
    child.kill();
    console.log(`${serialization.padEnd(8)} ${received} messages: ${((totalMs * 1000) / n).toFixed(2)} us/message end to end, ${((sendMs * 1000) / n).toFixed(2)} us/message to send`);
  }
}
