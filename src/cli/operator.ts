// Who runs a CLI command, for the audit log and the server's log of admin actions: the user
// behind sudo when there is one, else the OS account. os.userInfo() throws where the uid has
// no passwd entry (containers), hence the environment first.
import os from "node:os";

export function operatorName(): string {
  const fromEnv = [process.env.SUDO_USER, process.env.USER, process.env.LOGNAME].find((v) => v !== undefined && v !== "");
  if (fromEnv !== undefined) return fromEnv;
  try {
    return os.userInfo().username;
  } catch {
    return `uid ${process.getuid?.() ?? "unknown"}`;
  }
}
