// The configuration reference cannot drift from the schema: every setting has a description in
// schemas/config.schema.json and a row in the README's configuration tables with its
// environment variable and default, and the README lists no setting the schema lacks.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { envName } from '../../src/config/config.js';

const SCHEMA = fileURLToPath(new URL('../../../schemas/config.schema.json', import.meta.url));
const README = fileURLToPath(new URL('../../../README.md', import.meta.url));

interface SchemaNode {
  description?: string;
  default?: unknown;
  properties?: Record<string, SchemaNode>;
}

function leaves(node: SchemaNode, path: string[] = []): { key: string; path: string[]; node: SchemaNode }[] {
  if (node.properties) return Object.entries(node.properties).flatMap(([name, child]) => leaves(child, [...path, name]));
  return [{ key: path.join('.'), path, node }];
}

/** Rows of every Markdown table whose first cell is one backquoted setting name, by that name. */
function settingRows(markdown: string): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of markdown.split('\n')) {
    if (!line.startsWith('|')) continue;
    const cells = line
      .slice(1, line.trimEnd().endsWith('|') ? line.trimEnd().length - 1 : undefined)
      .split(/(?<!\\)\|/)
      .map((cell) => cell.trim());
    const name = /^`([A-Za-z][A-Za-z0-9.]*)`$/.exec(cells[0] ?? '')?.[1];
    if (name !== undefined) rows.set(name, cells);
  }
  return rows;
}

/** How the README writes a schema default: the value itself, in backquotes. */
const shownDefault = (value: unknown): string => `\`${typeof value === 'string' ? value : JSON.stringify(value)}\``;

describe('the configuration reference', () => {
  const schema = JSON.parse(readFileSync(SCHEMA, 'utf8')) as SchemaNode;
  const settings = leaves(schema);
  const rows = settingRows(readFileSync(README, 'utf8'));

  it('gives every setting in the schema a description', () => {
    const undescribed = settings.filter(({ node }) => (node.description ?? '').trim() === '').map(({ key }) => key);
    assert.deepEqual(undescribed, []);
  });

  it('has a README row for every setting, with its environment variable and default', () => {
    const problems: string[] = [];
    for (const { key, path, node } of settings) {
      const row = rows.get(key);
      if (!row) {
        problems.push(`${key}: no row in the README's configuration tables`);
        continue;
      }
      const [, environment = '', defaultCell = '', meaning = ''] = row;
      if (!environment.includes(`\`${envName(path)}\``)) problems.push(`${key}: environment should name ${envName(path)}, is "${environment}"`);
      if (node.default !== undefined && !defaultCell.includes(shownDefault(node.default))) {
        problems.push(`${key}: default should show ${shownDefault(node.default)}, is "${defaultCell}"`);
      }
      if (meaning === '') problems.push(`${key}: says nothing about what it does`);
    }
    assert.deepEqual(problems, []);
  });

  it('lists no setting in the README that the schema does not have', () => {
    const known = new Set(settings.map(({ key }) => key));
    assert.deepEqual([...rows.keys()].filter((key) => !known.has(key)), []);
  });
});
