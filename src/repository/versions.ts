// Version directory names ordered the way operators read them: v1.10 is newer than v1.9.
// Numeric segments compare as numbers, anything else as text; a non-numeric suffix
// (v2.0-rc1) sorts before the plain release (v2.0).

const VERSION_RE = /^v?(\d+(?:\.\d+)*)(?:[-+_.]?(.*))?$/i;

export function isVersionName(name: string): boolean {
  return VERSION_RE.test(name);
}

export function compareVersions(a: string, b: string): number {
  const ma = VERSION_RE.exec(a);
  const mb = VERSION_RE.exec(b);
  if (!ma || !mb) return a.localeCompare(b);
  const na = ma[1]!.split(".").map(Number);
  const nb = mb[1]!.split(".").map(Number);
  for (let i = 0; i < Math.max(na.length, nb.length); i++) {
    const d = (na[i] ?? 0) - (nb[i] ?? 0);
    if (d !== 0) return d;
  }
  const sa = ma[2] ?? "";
  const sb = mb[2] ?? "";
  if (sa === sb) return 0;
  if (sa === "") return 1;
  if (sb === "") return -1;
  return sa.localeCompare(sb, undefined, { numeric: true });
}

export function highestVersion(names: string[]): string | undefined {
  return [...names].sort(compareVersions).at(-1);
}
