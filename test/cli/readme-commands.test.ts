// Every `portcullis …` command in the README's code blocks exists as written: its subcommands
// answer `--help` with exit 0, each option it uses is one that subcommand (or the program)
// has, and it passes as many arguments as the subcommand takes. A renamed command or option
// fails here before an operator meets it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { CLI } from '../support/server.js';

const README = fileURLToPath(new URL('../../../README.md', import.meta.url));

/** Splits a shell line into words (quotes honoured), with the operators |, ||, &&, ; and redirections as words of their own. */
function shellWords(line: string): string[] {
  const words: string[] = [];
  let current = '';
  let quote: string | undefined;
  let started = false;
  const flush = () => {
    if (started) words.push(current);
    current = '';
    started = false;
  };
  for (let i = 0; i < line.length; i++) {
    const char = line[i] as string;
    if (quote) {
      if (char === quote) quote = undefined;
      else current += char;
      continue;
    }
    if (char === '"' || char === "'") {
      quote = char;
      started = true;
    } else if (char === '#' && !started) {
      break; // a comment
    } else if (/\s/.test(char)) {
      flush();
    } else if ('|&;<>'.includes(char)) {
      flush();
      let operator = char;
      while (i + 1 < line.length && '|&<>'.includes(line[i + 1] as string)) operator += line[++i];
      words.push(operator);
    } else {
      current += char;
      started = true;
    }
  }
  flush();
  return words;
}

/** The arguments after `portcullis` of each command in the README's fenced code blocks. */
function readmeCommands(markdown: string): { line: string; args: string[] }[] {
  const commands: { line: string; args: string[] }[] = [];
  let inBlock = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*```/.test(line)) {
      inBlock = !inBlock;
      continue;
    }
    if (!inBlock) continue;
    const words = shellWords(line.trim());
    let segment: string[] = [];
    const segments: string[][] = [];
    for (const word of words) {
      if (['|', '||', '&&', ';', '&'].includes(word)) {
        segments.push(segment);
        segment = [];
      } else segment.push(word);
    }
    segments.push(segment);
    for (let words of segments) {
      // Redirections and their targets are not arguments; leading VAR=value assignments are not the command.
      words = words.filter((word, i) => !/^\d*[<>]/.test(word) && !/^\d*[<>]/.test(words[i - 1] ?? ''));
      while (words.length > 0 && /^[A-Z_][A-Z0-9_]*=/.test(words[0] as string)) words = words.slice(1);
      if (words[0] === 'npx') words = words.slice(1);
      if (words[0] === 'portcullis') commands.push({ line: line.trim(), args: words.slice(1) });
    }
  }
  return commands;
}

interface Help {
  /** option flag → whether it takes a value */
  options: Map<string, boolean>;
  commands: Set<string>;
  required: number;
  optional: number;
  variadic: boolean;
}

function run(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], (error, stdout, stderr) =>
      resolve({ stdout, stderr, code: error ? Number((error as { code?: number }).code ?? 1) : 0 }),
    );
  });
}

/** Reads commander's help text: the usage line's arguments, the options and the subcommands. */
function parseHelp(text: string): Help {
  const help: Help = { options: new Map(), commands: new Set(), required: 0, optional: 0, variadic: false };
  const usage = /^Usage: \S+(.*)$/m.exec(text)?.[1] ?? '';
  for (const argument of usage.matchAll(/([<[])[^>\]]+?(\.\.\.)?[>\]]/g)) {
    if (argument[0] === '[options]' || argument[0] === '[command]') continue;
    if (argument[1] === '<') help.required++;
    else help.optional++;
    if (argument[2]) help.variadic = true;
  }
  let section = '';
  for (const line of text.split('\n')) {
    if (/^\S.*:$/.test(line)) {
      section = line;
      continue;
    }
    const entry = /^ {2}(\S.*?)(?: {2,}|$)/.exec(line)?.[1];
    if (entry === undefined) continue;
    if (section === 'Options:') {
      const takesValue = /[<[]/.test(entry);
      for (const flag of entry.split(/[ ,]+/).filter((word) => word.startsWith('-'))) help.options.set(flag, takesValue);
    } else if (section === 'Commands:') {
      help.commands.add(entry.split(' ')[0] as string);
    }
  }
  return help;
}

const helps = new Map<string, Promise<Help>>();

/** `portcullis <path…> --help`, which must succeed. */
function helpOf(path: string[]): Promise<Help> {
  const key = path.join(' ');
  let help = helps.get(key);
  if (!help) {
    help = run([...path, '--help']).then((result) => {
      assert.equal(result.code, 0, `portcullis ${key} --help exited with ${result.code}: ${result.stderr}`);
      return parseHelp(result.stdout);
    });
    helps.set(key, help);
  }
  return help;
}

/** What is wrong with one README command line, or nothing. */
async function check(args: string[]): Promise<string[]> {
  const problems: string[] = [];
  const root = await helpOf([]);
  const path: string[] = [];
  let help = root;
  let positional = 0;
  for (let i = 0; i < args.length; i++) {
    const word = args[i] as string;
    if (word.startsWith('-') && word !== '-') {
      const flag = word.split('=')[0] as string;
      const takesValue = help.options.get(flag) ?? root.options.get(flag);
      if (takesValue === undefined) problems.push(`portcullis ${path.join(' ')} has no option ${flag}`);
      else if (takesValue && !word.includes('=')) i++;
    } else if (positional === 0 && help.commands.has(word)) {
      path.push(word);
      help = await helpOf(path);
    } else {
      positional++;
    }
  }
  if (help.commands.size > 0 && path.length === 0) problems.push('names no command');
  else if (help.commands.size > 0 && positional > 0) problems.push(`portcullis ${path.join(' ')} has no subcommand ${args.find((a) => !path.includes(a) && !a.startsWith('-'))}`);
  else if (positional < help.required || (!help.variadic && positional > help.required + help.optional)) {
    problems.push(`portcullis ${path.join(' ')} takes ${help.required}${help.optional ? `–${help.required + help.optional}` : ''} arguments, not ${positional}`);
  }
  return problems;
}

describe("the README's portcullis commands", () => {
  const commands = readmeCommands(readFileSync(README, 'utf8'));

  it('are found in its code blocks', () => {
    const seen = new Set(commands.map(({ args }) => args.filter((word) => /^[a-z]+$/.test(word)).slice(0, 2).join(' ')));
    for (const expected of ['serve', 'migrate', 'user add', 'user passwd', 'user rm', 'user list', 'policy apply', 'policy export', 'access check', 'keys rotate']) {
      assert.ok(seen.has(expected), `no "portcullis ${expected}" in the README's code blocks (found: ${[...seen].join(', ')})`);
    }
    assert.ok(commands.some(({ args }) => args[0] === '-c'), 'the README shows -c FILE');
  });

  it('exist as written: every subcommand answers --help, every option and argument count fits', async () => {
    const problems: string[] = [];
    for (const { line, args } of commands) {
      for (const problem of await check(args)) problems.push(`${line}\n    ${problem}`);
    }
    assert.deepEqual(problems, []);
  });

  it('are checked for real: a misspelled command, option or argument count is caught', async () => {
    assert.deepEqual(await check(['user', 'ad', 'alice']), ['portcullis user has no subcommand ad']);
    assert.deepEqual(await check(['policy', 'apply', '--file', 'r.yaml', '--dryrun']), ['portcullis policy apply has no option --dryrun']);
    assert.deepEqual(await check(['access', 'check', 'alice']), ['portcullis access check takes 2 arguments, not 1']);
    assert.deepEqual(await check(['-c', 'portcullis.yaml', 'user', 'list']), []);
    assert.deepEqual(
      readmeCommands('```sh\nPORTCULLIS_DATA_DIR=/d npx portcullis policy export > rules.yaml   # comment\necho "x # y" | portcullis user add ci --password-stdin\n```\nportcullis outside a block\n').map(({ args }) => args),
      [['policy', 'export'], ['user', 'add', 'ci', '--password-stdin']],
    );
  });
});
