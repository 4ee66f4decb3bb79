// Reading charts/portcullis without helm: its files, its values merged as helm merges them, what
// its templates refer to, and the configuration file its ConfigMap renders (the few additions
// of the `portcullis.config` helper, repeated here and checked against the helper's text).
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const CHART = `${REPO}charts/portcullis/`;

export type Tree = Record<string, unknown>;

export const isTree = (value: unknown): value is Tree => typeof value === 'object' && value !== null && !Array.isArray(value);

export function chartText(path: string): string {
  return readFileSync(`${CHART}${path}`, 'utf8');
}

export function chartYaml(path: string): Tree {
  const parsed: unknown = parseYaml(chartText(path));
  if (!isTree(parsed)) throw new Error(`${path} is not a YAML mapping`);
  return parsed;
}

export const defaultValues = (): Tree => chartYaml('values.yaml');

/** Every template, by file name (templates/*.yaml, *.tpl, NOTES.txt). */
export function templates(): Map<string, string> {
  const dir = `${CHART}templates/`;
  return new Map(readdirSync(dir).map((name) => [name, readFileSync(`${dir}${name}`, 'utf8')]));
}

/**
 * Helm's merge of a values file over the chart's values: mappings merge key by key, anything
 * else replaces, and null removes the key.
 */
export function mergeValues(base: Tree, override: Tree): Tree {
  const merged: Tree = { ...base };
  for (const [key, value] of Object.entries(override)) {
    if (value === null) delete merged[key];
    else if (isTree(value) && isTree(merged[key])) merged[key] = mergeValues(merged[key] as Tree, value);
    else merged[key] = value;
  }
  return merged;
}

/** The value at a dotted path, or undefined when some key on the way is missing. */
export function valueAt(tree: unknown, path: readonly string[]): unknown {
  let node = tree;
  for (const key of path) {
    if (!isTree(node) || !Object.hasOwn(node, key)) return undefined;
    node = node[key];
  }
  return node;
}

function stringAt(tree: Tree, path: string): string {
  const value = valueAt(tree, path.split('.'));
  if (typeof value !== 'string') throw new Error(`values: ${path} is not a string`);
  return value;
}

/** The body of `{{- define "NAME" -}} … {{- end -}}` in _helpers.tpl (defines do not nest there). */
export function helper(name: string): string {
  const text = chartText('templates/_helpers.tpl');
  const start = text.indexOf(`{{- define "${name}" -}}`);
  if (start < 0) throw new Error(`_helpers.tpl defines no ${name}`);
  const bodyStart = text.indexOf('}}', start) + 2;
  const next = text.indexOf('{{- define ', bodyStart);
  const body = text.slice(bodyStart, next < 0 ? undefined : next);
  return body.slice(0, body.lastIndexOf('{{- end -}}'));
}

/** A helper that is a constant, e.g. portcullis.tokenKeyDir → /etc/portcullis/token-key. */
export const helperConstant = (name: string): string => helper(name).trim();

/** The `set $map "key"` calls of a helper, as "map.key". */
export function setCalls(name: string): string[] {
  return [...helper(name).matchAll(/\bset \$(\w+) "(\w+)"/g)].map(([, map, key]) => `${map}.${key}`);
}

/** `.Values.a.b.c` (and `$.Values…`) paths the templates use, with the file each is in. */
export function valuesReferences(): { file: string; path: string[] }[] {
  return [...templates()].flatMap(([file, text]) =>
    [...text.matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)].map(([, path]) => ({ file, path: (path as string).slice(1).split('.') })),
  );
}

/** Environment variables taken from a Secret: variable name → key under `secrets` in the values. */
export function secretVariables(): Map<string, string> {
  return new Map([...helper('portcullis.env').matchAll(/"env" "(PORTCULLIS_\w+)" "ref" \.Values\.secrets\.(\w+)\)/g)].map(([, env, secret]) => [env as string, secret as string]));
}

/** Where a release's pods are: the fullname the helper derives and the namespace. */
export interface Release {
  name: string;
  namespace: string;
}

function fullname(values: Tree, release: Release): string {
  const override = values.fullnameOverride;
  if (typeof override === 'string' && override) return override.slice(0, 63).replace(/-$/, '');
  const name = typeof values.nameOverride === 'string' && values.nameOverride ? values.nameOverride : 'portcullis';
  return (release.name.includes(name) ? release.name : `${release.name}-${name}`).slice(0, 63).replace(/-$/, '');
}

function externalURL(values: Tree, release: Release): string {
  const given = stringAt(values, 'externalURL');
  if (given) return given.replace(/\/$/, '');
  const scheme = stringAt(values, 'tls.secretName') ? 'https' : 'http';
  return `${scheme}://${fullname(values, release)}.${release.namespace}.svc:${String(valueAt(values, ['service', 'port']))}`;
}

/** The set calls `renderConfig` repeats, in the helper's order. */
export const CONFIG_ADDITIONS = ['token.realm', 'token.keyFile', 'auth.token', 'config.auth', 'config.tls'];

/** portcullis.yaml as the ConfigMap renders it: `config` plus the portcullis.config helper's additions. */
export function renderConfig(values: Tree, release: Release): Tree {
  const config = structuredClone(values.config);
  if (!isTree(config)) throw new Error('values: config is not a mapping');
  const auth = isTree(config.auth) ? config.auth : {};
  const token = isTree(auth.token) ? auth.token : {};
  if (!token.realm) token.realm = `${externalURL(values, release)}/auth/token`;
  if (stringAt(values, 'secrets.tokenSigningKey.name')) token.keyFile = `${helperConstant('portcullis.tokenKeyDir')}/signing-key.pem`;
  auth.token = token;
  config.auth = auth;
  if (stringAt(values, 'tls.secretName')) {
    const dir = helperConstant('portcullis.tlsDir');
    config.tls = { certificate: `${dir}/tls.crt`, key: `${dir}/tls.key` };
  }
  return config;
}

/** Names of the Secrets' variables the pods get with these values (a reference with a name). */
export function secretVariablesSet(values: Tree): string[] {
  return [...secretVariables()].filter(([, secret]) => stringAt(values, `secrets.${secret}.name`) !== '').map(([env]) => env);
}
