// The catalog shows each caller what it may pull, and reads only where the caller's rules point:
// an anonymous caller with rights on one namespace costs a few rows, not the whole table.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { openDatabase, migrateToLatest } from '../../src/metadata/database.js';
import { KnexMetadataStore } from '../../src/metadata/knex-store.js';
import { ListingService } from '../../src/registry/listing.js';
import { pullNamespaces, type AccessRule, type Principal } from '../../src/auth/policy/rules.js';
import { adminToken, api } from '../auth/support.js';
import pg from 'pg';
import { backendEnvOf, startPortcullis, type RunningRegistry } from '../support/server.js';

const MANY = 20_000;

/** Adds repositories straight into the database, as a registry that has grown would have them. */
async function addRepositories(server: Pick<RunningRegistry, 'dataDir'>, names: string[]): Promise<void> {
  const postgres = backendEnvOf(server.dataDir).PORTCULLIS_METADATA_POSTGRES_URL;
  if (postgres !== undefined) {
    const client = new pg.Client({ connectionString: postgres });
    await client.connect();
    try {
      await client.query('insert into repositories (name, created_at) select unnest($1::text[]), $2 on conflict do nothing', [names, Date.now()]);
    } finally {
      await client.end();
    }
    return;
  }
  const db = new Database(join(server.dataDir, 'portcullis.db'), { timeout: 5000 });
  try {
    const insert = db.prepare('insert or ignore into repositories (name, created_at) values (?, ?)');
    db.transaction(() => {
      for (const name of names) insert.run(name, Date.now());
    })();
  } finally {
    db.close();
  }
}

async function catalog(server: RunningRegistry, token?: string): Promise<string[]> {
  const names: string[] = [];
  let path: string | undefined = '/v2/_catalog?n=1000';
  while (path) {
    const response: Response = await fetch(new URL(path, server.url), { headers: token ? { Authorization: `Bearer ${token}` } : {} });
    assert.equal(response.status, 200);
    names.push(...((await response.json()) as { repositories: string[] }).repositories);
    path = /^<([^>]+)>/.exec(response.headers.get('Link') ?? '')?.[1];
  }
  return names;
}

async function catalogToken(server: RunningRegistry, credentials?: { username: string; password: string }): Promise<string> {
  const headers: Record<string, string> = credentials ? { Authorization: `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}` } : {};
  const response = await fetch(`${server.url}/auth/token?service=portcullis&scope=registry:catalog:*`, { headers });
  return ((await response.json()) as { token: string }).token;
}

describe('catalog visibility', () => {
  let server: RunningRegistry;

  before(async () => {
    server = await startPortcullis();
    const names = Array.from({ length: MANY }, (_, i) => `team-x/app-${String(i).padStart(5, '0')}`);
    await addRepositories(server, [...names, 'public/a', 'public/b/c', 'publicity/x', 'users/alice/tools']);
    const admin = await adminToken(server);
    const rules = [
      { subject: 'anonymous', repositories: 'public/**', actions: ['pull'] },
      { subject: 'authenticated', repositories: 'users/${user}/**', actions: ['pull', 'push'] },
    ];
    assert.equal((await api(server.url, admin, 'PUT', '/admin/v1/rules', { rules })).status, 200);
  });
  after(() => server.stop());

  it('shows an anonymous caller exactly what anonymous may pull', async () => {
    assert.deepEqual(await catalog(server, await catalogToken(server)), ['public/a', 'public/b/c']);
  });

  it('shows the administrator everything, page by page', async () => {
    const all = await catalog(server, await catalogToken(server, server.admin));
    assert.equal(all.length, MANY + 4);
  });
});

describe('catalog reads', () => {
  let dir: string;
  let store: KnexMetadataStore;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-catalog-'));
    const db = openDatabase({ driver: 'sqlite', path: join(dir, 'portcullis.db') });
    await migrateToLatest(db);
    store = new KnexMetadataStore(db);
    await addRepositories({ dataDir: dir }, [...Array.from({ length: 5000 }, (_, i) => `big/r${i}`), 'public/a', 'public/b', 'publicity/x']);
  });
  after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('reads only the rows below the caller’s namespaces', async () => {
    let rowsRead = 0;
    const counting = Object.create(store) as KnexMetadataStore;
    counting.listRepositories = async (page) => {
      const rows = await store.listRepositories(page);
      rowsRead += rows.length;
      return rows;
    };
    const listing = new ListingService(counting, 1000);
    const page = await listing.repositories({}, { namespaces: ['public'], visible: (name) => name.startsWith('public/') });
    assert.deepEqual(page.items, ['public/a', 'public/b']);
    assert.equal(rowsRead, 2, 'publicity/x and big/* are never read');
    rowsRead = 0;
    const none = await listing.repositories({}, { namespaces: [], visible: () => true });
    assert.deepEqual(none.items, []);
    assert.equal(rowsRead, 0);
  });
});

describe('pull namespaces', () => {
  const rule = (subject: AccessRule['subject'], repositories: string, actions: AccessRule['actions']): AccessRule => ({ subject, repositories, actions });
  const alice: Principal = { kind: 'user', identity: { username: 'alice', provider: 'local', groups: [{ name: 'dev' }] } };

  it('derives the outermost literal prefixes of the rules that let the caller pull', () => {
    const rules = [
      rule({ kind: 'anonymous' }, 'public/**', ['pull']),
      rule({ kind: 'group', name: 'dev' }, 'team-a/*/app', ['pull', 'push']),
      rule({ kind: 'group', name: 'dev' }, 'team-a/ci/**', ['pull']),
      rule({ kind: 'authenticated' }, 'users/${user}/**', ['pull']),
      rule({ kind: 'group', name: 'ops' }, 'ops/**', ['pull']),
      rule({ kind: 'group', name: 'dev' }, 'scratch/**', ['delete']),
    ];
    assert.deepEqual(pullNamespaces(rules, alice), ['public', 'team-a', 'users/alice']);
    assert.deepEqual(pullNamespaces(rules, { kind: 'anonymous' }), ['public']);
    assert.deepEqual(pullNamespaces([rule({ kind: 'authenticated' }, '*/public', ['pull'])], alice), 'everything');
    // A name that is no repository component gets no personal namespace, so nothing to read.
    const upper: Principal = { kind: 'user', identity: { username: 'Team-A', provider: 'ldap', groups: [] } };
    assert.deepEqual(pullNamespaces([rule({ kind: 'authenticated' }, '${user}/**', ['pull'])], upper), []);
  });
});
