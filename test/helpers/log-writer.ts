// A child process for the reopen test: writes numbered records through the real Logger as
// fast as it can, reopens the file on SIGUSR1 (as `moltbot deploy` does) and, on SIGTERM,
// stops, closes and prints the last number it wrote.
// Usage: node log-writer.js <file> <maxBytes> <keep>
import { createLogger } from "../../src/observe/logger.js";

const [file, maxBytes, keep] = process.argv.slice(2);
const log = createLogger({ level: "INFO", format: "text", stdout: false, file: file!, maxBytes: Number(maxBytes), keep: Number(keep) });
let reopens = 0;
process.on("SIGUSR1", () => {
  log.reopen();
  reopens++;
});
let stop = false;
process.on("SIGTERM", () => (stop = true));

let n = 0;
process.stdout.write("ready\n");
while (!stop) {
  // Batches between turns of the event loop, so signals are handled between any two records.
  for (let k = 0; k < 50; k++) log.info(`n=${n++}`);
  await new Promise((r) => setImmediate(r));
}
log.close();
process.stdout.write(`last ${n - 1} reopens ${reopens}\n`);
