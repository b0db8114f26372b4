// Turns yargs' validation messages into one line that names what was wrong, the way an
// operator typed it: `unknown option --such-flag`, not yargs' `Unknown arguments: such-flag,
// suchFlag` (its camel-case twin of every dashed flag) or its multi-line choice listing. yargs
// has no structured form of these failures, so this matches its English messages (main.ts pins
// the locale to "en"); anything else passes through with its lines joined.

/**
 * @param message yargs' failure message
 * @param argv the raw arguments (after `moltbot`)
 * @param usages the top-level commands as yargs declares them: "deploy", "init <dir>"
 */
export function usageError(message: string, argv: readonly string[], usages: readonly string[]): string {
  const words = argv.filter((a) => !a.startsWith("-"));
  const commands = usages.map((u) => u.split(" ")[0]!);
  const usage = words[0] === undefined ? undefined : usages[commands.indexOf(words[0])];
  const help = `see 'moltbot ${usage === undefined ? "" : `${words[0]} `}--help'`;
  return `${describe(message.trim(), argv, words, commands, usage)} (${help})`;
}

function describe(message: string, argv: readonly string[], words: readonly string[], commands: readonly string[], usage: string | undefined): string {
  let m: RegExpExecArray | null;
  if ((m = /^Unknown arguments?: (.*)$/s.exec(message))) {
    const names = m[1]!.split(", ");
    // yargs lists `such-flag` and its camel-case expansion `suchFlag`: keep the one typed.
    const typed = names.filter((n) => !names.some((o) => o !== n && camel(o) === n));
    const options = typed.filter((n) => words.indexOf(n) === -1).map(flag);
    const others = typed.filter((n) => words.indexOf(n) !== -1).map((n) => `'${n}'`);
    const parts: string[] = [];
    if (options.length > 0) parts.push(`unknown option${options.length > 1 ? "s" : ""} ${options.join(", ")}`);
    if (others.length > 0) parts.push(`unexpected argument${others.length > 1 ? "s" : ""} ${others.join(", ")}`);
    return parts.join("; ");
  }
  if ((m = /^Unknown commands?: (.*)$/s.exec(message))) {
    const names = m[1]!.split(", ");
    if (names[0] === words[0]) return `unknown command '${names[0]}'; commands: ${commands.join(", ")}`;
    return `unexpected argument${names.length > 1 ? "s" : ""} ${names.map((n) => `'${n}'`).join(", ")}`;
  }
  if ((m = /^Did you mean (.*)\?$/s.exec(message))) {
    // recommendCommands names the suggestion only; the mistyped word is the first that is not a command.
    const typo = words.find((w) => !commands.includes(w)) ?? words[words.length - 1];
    return `unknown command '${typo}'; did you mean '${m[1]}'?`;
  }
  if ((m = /^Not enough arguments following: (.*)$/s.exec(message))) return `option ${flag(m[1]!)} needs a value`;
  if (message.startsWith("Invalid values:")) {
    const problems = [...message.matchAll(/Argument: (.*?), Given: (.*?), Choices: (.*)$/gm)].map(([, name, given, choices]) => {
      const list = choices!.replace(/"/g, "");
      // A choice option given last with nothing after it parses as `true`.
      return given === "true" && !argv.some((a) => a.startsWith(`${flag(name!)}=`))
        ? `option ${flag(name!)} needs a value (one of: ${list})`
        : `option ${flag(name!)}: ${given} is not one of: ${list}`;
    });
    if (problems.length > 0) return problems.join("; ");
  }
  if ((m = /^Missing required arguments?: (.*)$/s.exec(message))) return `missing ${m[1]!.split(", ").map((n) => `<${n}>`).join(", ")}`;
  if ((m = /^Not enough non-option arguments: got (\d+), need at least (\d+)$/s.exec(message))) {
    const wanted = usage?.match(/<[^>]+>/g);
    return wanted ? `missing ${wanted.slice(Number(m[1])).join(" ")} (usage: moltbot ${usage})` : `missing argument (got ${m[1]}, need at least ${m[2]})`;
  }
  return message.replace(/\s*\n\s*/g, "; ");
}

function flag(name: string): string {
  return name.length === 1 ? `-${name}` : `--${name}`;
}

function camel(name: string): string {
  return name.replace(/-+([^-])/g, (_, c: string) => c.toUpperCase());
}
