// The trust policies through the admin API: PUT with a dry run and the difference, GET as JSON and
// as the YAML `trust apply` takes back, every invalid key named, keys only inline, each change
// audited (actor, source, difference) in the same transaction as the change; `trust/check`
// explaining an image as `portcullis trust check` does; the auditors' role reading all of it and
// changing none of it; and concurrent changes each diffed against the set they replace (SQLite and
// PostgreSQL).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { addUser, adminToken, api, tokenFor } from '../auth/support.js';
import { runCli } from '../support/cli.js';
import { createTestDatabase, postgresEnv } from '../support/postgres.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminClient, randomName, type TestRegistry } from '../support/registry-client.js';
import { cosignPayload, makeKey, pushCosignSignature, type TestKey } from '../support/signing.js';

interface Diff {
  dryRun: boolean;
  added: string[];
  removed: string[];
  changed: string[];
  /** how many stored results the server judged again after the change */
  reverified?: number;
}
interface Problem {
  status: number;
  title: string;
  detail: string;
  errors?: { pointer: string; detail: string }[];
}
interface TrustDocument {
  policies: { repositories: string; immutableTags?: string[]; signatures: { mode: string; signers: { name: string; cosign?: string }[] } }[];
}
interface TrustEvent {
  type: string;
  actor?: string;
  actorKind?: string;
  clientIp?: string;
  details?: { source?: string; added?: string[]; removed?: string[]; changed?: string[] };
}
interface Check {
  image: string;
  digest: string;
  policy: { repositories: string; mode: string; immutableTags: string[]; signers: string[]; tagImmutable?: boolean } | null;
  signatures: { format: string; outcome: string; signer?: string; reason: string; verifiedAt: string; current: boolean }[];
  verdict: string;
  reason: string;
  satisfiedBy?: { signer: string; format: string };
}

const carol = { username: 'carol', password: 'carol-password-1234' };

let server: RunningRegistry;
let registry: TestRegistry;
let admin: string;
let auditor: string;
let key: TestKey;

const trustEvents = async (): Promise<TrustEvent[]> => (await api<{ events: TrustEvent[] }>(server.url, admin, 'GET', '/admin/v1/audit?type=trust.changed')).body.events;
const cli = (args: string[]) => runCli(args, { dataDir: server.dataDir });

/** A change's answer without `basedOn`, the version it was compared against (checked for form). */
function versioned<T>(body: T): Omit<T, 'basedOn'> {
  const { basedOn, ...rest } = body as T & { basedOn?: unknown };
  assert.match(String(basedOn), /^[A-Za-z0-9_-]{22}$/);
  return rest;
}

function policies(mode: 'enforce' | 'audit' = 'enforce'): TrustDocument {
  return {
    policies: [
      { repositories: 'prod/**', immutableTags: ['v*'], signatures: { mode, signers: [{ name: 'release', cosign: key.publicKeyPem }] } },
      { repositories: 'prod/sandbox/**', signatures: { mode: 'off', signers: [] } },
    ],
  };
}

before(async () => {
  server = await startPortcullis({ env: { PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0' } });
  registry = adminClient(server);
  key = makeKey('ecdsa-p256');
  await addUser(server.dataDir, carol.username, carol.password);
  admin = await adminToken(server);
  const rules = await api(server.url, admin, 'PUT', '/admin/v1/rules', { rules: [{ subject: 'user:carol', repositories: '**', actions: ['pull', 'audit'] }] });
  assert.equal(rules.status, 200, rules.text);
  auditor = await tokenFor(server.url, carol, ['registry:audit:*']);
});
after(() => server?.stop());

describe('PUT and GET /admin/v1/trust', () => {
  it('shows the difference on a dry run and changes nothing; then applies it, once, audited with the actor and the source', async () => {
    const dry = await api<Diff>(server.url, admin, 'PUT', '/admin/v1/trust?dryRun=true', policies());
    assert.equal(dry.status, 200, dry.text);
    assert.deepEqual(versioned(dry.body), { dryRun: true, added: ['prod/**', 'prod/sandbox/**'], removed: [], changed: [] });
    assert.deepEqual((await api(server.url, admin, 'GET', '/admin/v1/trust')).body, { policies: [] });
    assert.deepEqual(await trustEvents(), [], 'a dry run records nothing');

    const applied = await api<Diff>(server.url, admin, 'PUT', '/admin/v1/trust', policies());
    assert.equal(applied.status, 200, applied.text);
    // After a change the server judges stored signatures again (none here yet) and says how many.
    assert.deepEqual(versioned(applied.body), { dryRun: false, added: ['prod/**', 'prod/sandbox/**'], removed: [], changed: [], reverified: 0 });
    const again = await api<Diff>(server.url, admin, 'PUT', '/admin/v1/trust', policies());
    assert.deepEqual(versioned(again.body), { dryRun: false, added: [], removed: [], changed: [] }, 'nothing changed: nothing to judge again');

    const changed = await api<Diff>(server.url, admin, 'PUT', '/admin/v1/trust', { policies: [{ ...policies('audit').policies[0] }] });
    assert.deepEqual(versioned(changed.body), { dryRun: false, added: [], removed: ['prod/sandbox/**'], changed: ['prod/**'], reverified: 0 });
    assert.equal((await api(server.url, admin, 'PUT', '/admin/v1/trust', policies())).status, 200);

    const events = await trustEvents();
    assert.equal(events.length, 3, JSON.stringify(events));
    const [last, second, first] = events;
    assert.deepEqual(
      { type: first?.type, actor: first?.actor, actorKind: first?.actorKind, clientIp: first?.clientIp, details: first?.details },
      { type: 'trust.changed', actor: 'admin', actorKind: 'user', clientIp: '127.0.0.1', details: { source: 'admin API', added: ['prod/**', 'prod/sandbox/**'], removed: [], changed: [] } },
    );
    assert.deepEqual(second?.details, { source: 'admin API', added: [], removed: ['prod/sandbox/**'], changed: ['prod/**'] });
    assert.deepEqual(last?.details, { source: 'admin API', added: ['prod/sandbox/**'], removed: [], changed: ['prod/**'] });
  });

  it('answers the policies as JSON and as the YAML `trust apply` takes back unchanged', async () => {
    const json = await api<TrustDocument>(server.url, admin, 'GET', '/admin/v1/trust');
    assert.equal(json.status, 200, json.text);
    assert.equal(json.headers.get('Content-Type'), 'application/json');
    assert.deepEqual(json.body.policies.map((policy) => [policy.repositories, policy.signatures.mode]), [['prod/**', 'enforce'], ['prod/sandbox/**', 'off']]);
    assert.deepEqual(json.body.policies[0]?.immutableTags, ['v*']);
    assert.equal(json.body.policies[0]?.signatures.signers[0]?.cosign, key.publicKeyPem.trim(), 'keys inline');

    const yaml = await fetch(`${server.url}/admin/v1/trust`, { headers: { Authorization: `Bearer ${admin}`, Accept: 'application/yaml' } });
    assert.equal(yaml.status, 200);
    assert.equal(yaml.headers.get('Content-Type'), 'application/yaml; charset=utf-8');
    const text = await yaml.text();
    assert.equal(text, (await cli(['trust', 'export'])).stdout, 'the same document as `portcullis trust export`');
    const byParameter = await api(server.url, admin, 'GET', '/admin/v1/trust?format=yaml');
    assert.equal(byParameter.text, text);
    const file = join(server.dataDir, 'from-api.yaml');
    await writeFile(file, text);
    const reapplied = await cli(['trust', 'apply', '-f', file]);
    assert.equal(reapplied.code, 0, reapplied.stderr);
    assert.equal(reapplied.stdout, 'no changes\n');
    // And the JSON answer is a body PUT takes back unchanged.
    assert.deepEqual(versioned((await api<Diff>(server.url, admin, 'PUT', '/admin/v1/trust?dryRun=true', json.body)).body), { dryRun: true, added: [], removed: [], changed: [] });
    assert.equal((await api(server.url, admin, 'GET', '/admin/v1/trust?format=xml')).status, 400);
  });

  it('refuses an invalid document with 400 naming each bad key, and changes nothing', async () => {
    const before = (await api(server.url, admin, 'GET', '/admin/v1/trust')).text;
    const eventsBefore = (await trustEvents()).length;
    const bad = await api<Problem>(server.url, admin, 'PUT', '/admin/v1/trust', {
      policies: [
        { repositories: 'prod/**', signatures: { mode: 'enforcing', signers: [{ name: 'release', cosign: key.publicKeyPem }] } },
        { repositories: 'PROD/**' },
        { repositories: 'team/**', immutableTags: ['v(1)'], signatures: { mode: 'enforce', signers: [{ name: 'k', gpg: 'not a key' }] } },
      ],
    });
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.headers.get('Content-Type'), 'application/problem+json');
    assert.equal(bad.body.title, 'Bad Request');
    assert.deepEqual(bad.body.errors?.map((error) => error.pointer), [
      '/policies/0/signatures/mode',
      '/policies/1/repositories',
      '/policies/2/immutableTags',
      '/policies/2/signatures/signers/0/gpg',
    ]);
    assert.match(bad.body.errors?.[0]?.detail ?? '', /must be one of enforce, audit, off/);
    assert.match(bad.body.detail, /policies\[0\]\.signatures\.mode/);

    const cases: [unknown, string, RegExp][] = [
      // A path would be read from the server's disk: only a policy file's paths are read (by the CLI).
      [{ policies: [{ repositories: 'prod/**', signatures: { mode: 'enforce', signers: [{ name: 'release', cosign: 'keys/cosign.pub' }] } }] }, '/policies/0/signatures/signers/0/cosign', /write the key or document inline/],
      [{ policies: [{ repositories: 'prod/**', signatures: { mode: 'audit', signers: [], trustedRoot: '/etc/passwd' } }] }, '/policies/0/signatures/trustedRoot', /inline/],
      [{ policies: [{ repositories: 'prod/**', colour: 'blue' }] }, '/policies/0/colour', /not a known key/],
      [{ policies: [{ repositories: 'prod/**' }], rules: [] }, '/rules', /unknown key/],
      [{ rules: [] }, '/rules', /unknown key/],
    ];
    for (const [body, pointer, detail] of cases) {
      const response = await api<Problem>(server.url, admin, 'PUT', '/admin/v1/trust', body);
      assert.equal(response.status, 400, response.text);
      const error = response.body.errors?.find((entry) => entry.pointer === pointer);
      assert.ok(error, `${pointer} in ${response.text}`);
      assert.match(error.detail, detail);
    }
    for (const [text, status] of [['not json', 400], ['[]', 400]] as const) {
      assert.equal((await api(server.url, admin, 'PUT', '/admin/v1/trust', text)).status, status);
    }
    const form = await fetch(`${server.url}/admin/v1/trust`, { method: 'PUT', headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/yaml' }, body: 'policies: []' });
    assert.equal(form.status, 415);
    assert.equal((await api(server.url, admin, 'PUT', '/admin/v1/trust?dryRun=maybe', policies())).status, 400);
    assert.equal((await api(server.url, admin, 'GET', '/admin/v1/trust')).text, before);
    assert.equal((await trustEvents()).length, eventsBefore);
  });

  it('commits a change together with its audit event: when the event cannot be written, the change is not made either', async () => {
    const before = (await api(server.url, admin, 'GET', '/admin/v1/trust')).text;
    const eventsBefore = await trustEvents();
    // The database refuses every audit event from now on, as a full or broken audit table would.
    const sql = (statement: string) => {
      const db = new Database(join(server.dataDir, 'portcullis.db'), { timeout: 10_000 });
      try {
        db.exec(statement);
      } finally {
        db.close();
      }
    };
    sql("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events BEGIN SELECT RAISE(ABORT, 'audit refused'); END");
    try {
      const refused = await api<Problem>(server.url, admin, 'PUT', '/admin/v1/trust', { policies: [] });
      assert.ok(refused.status >= 500, refused.text);
      assert.equal(refused.headers.get('Content-Type'), 'application/problem+json');
    } finally {
      sql('DROP TRIGGER refuse_audit');
    }
    assert.equal((await api(server.url, admin, 'GET', '/admin/v1/trust')).text, before, 'the policies are as they were');
    assert.deepEqual(await trustEvents(), eventsBefore);
    // The CLI shares the path: its change and event commit together too.
    const file = join(server.dataDir, 'one.yaml');
    await writeFile(file, 'policies:\n  - repositories: prod/**\n    immutableTags: ["v*"]\n');
    assert.equal((await cli(['trust', 'apply', '-f', file])).code, 0);
    const [cliEvent] = await trustEvents();
    assert.deepEqual([cliEvent?.actorKind, cliEvent?.actor, cliEvent?.details?.source], ['cli', 'cli', file]);
    assert.equal((await api(server.url, admin, 'PUT', '/admin/v1/trust', policies())).status, 200);
  });
});

describe('GET /admin/v1/trust/check', () => {
  it('explains an image as `portcullis trust check` does: the policy, each signature, the verdict', async () => {
    const repository = `prod/${randomName()}`;
    const image = await registry.pushImage(repository, 'v1');
    const digest = image.descriptor.digest;
    const check = (reference: string) => api<Check>(server.url, admin, 'GET', `/admin/v1/trust/check?image=${encodeURIComponent(reference)}`);

    const unsigned = await check(`${repository}:v1`);
    assert.equal(unsigned.status, 200, unsigned.text);
    assert.deepEqual(unsigned.body.policy, { repositories: 'prod/**', mode: 'enforce', immutableTags: ['v*'], signers: ['release'], tagImmutable: true });
    assert.deepEqual([unsigned.body.image, unsigned.body.digest, unsigned.body.signatures, unsigned.body.verdict], [`${repository}:v1@${digest}`, digest, [], 'refused']);
    assert.match(unsigned.body.reason, /no valid signature from a signer of the trust policy for prod\/\*\*/);
    const cliUnsigned = await cli(['trust', 'check', `${repository}:v1`]);
    assert.equal(cliUnsigned.code, 1);
    assert.match(cliUnsigned.stdout, /^verdict {5}refused to pull-only principals/m);
    assert.match(cliUnsigned.stdout, /^tag {9}v1 is immutable/m);

    await pushCosignSignature(registry, repository, digest, makeKey('ecdsa-p256'), cosignPayload({ reference: `${server.host}/${repository}`, digest }));
    await pushCosignSignature(registry, repository, digest, key, cosignPayload({ reference: `${server.host}/${repository}`, digest }));
    const signed = await check(`${repository}@${digest}`);
    assert.equal(signed.status, 200, signed.text);
    assert.equal(signed.body.verdict, 'served');
    assert.deepEqual(signed.body.signatures.map((s) => [s.format, s.outcome, s.signer ?? null, s.current]), [['cosign', 'invalid', null, true], ['cosign', 'valid', 'release', true]]);
    assert.match(signed.body.signatures[1]?.reason ?? '', /signed with release's key/);
    assert.ok(!Number.isNaN(Date.parse(signed.body.signatures[1]?.verifiedAt ?? '')));
    assert.deepEqual([signed.body.satisfiedBy?.signer, signed.body.satisfiedBy?.format], ['release', 'cosign']);
    const cliSigned = await cli(['trust', 'check', `${repository}@${digest}`]);
    assert.equal(cliSigned.code, 0);
    assert.match(cliSigned.stdout, /^verdict {5}served \(valid signature from release\)$/m);

    // A change of the policy: the stored results are judged again under it before the answer.
    const tightened = policies();
    tightened.policies[0]?.immutableTags?.push('stable');
    const change = await api<Diff>(server.url, admin, 'PUT', '/admin/v1/trust', tightened);
    assert.equal(change.status, 200, change.text);
    assert.ok((change.body.reverified ?? 0) >= 2, change.text);
    const rechecked = await check(`${repository}@${digest}`);
    assert.deepEqual([rechecked.body.verdict, rechecked.body.signatures.map((s) => s.current)], ['served', [true, true]]);
    assert.deepEqual(rechecked.body.policy?.immutableTags, ['v*', 'stable']);
    assert.equal((await api(server.url, admin, 'PUT', '/admin/v1/trust', policies())).status, 200);

    // The signature artifact itself stays readable, and says so.
    const artifact = await check(`${repository}:${digest.replace(':', '-')}.sig`);
    assert.deepEqual([artifact.body.verdict, artifact.body.reason], ['served', 'a signature artifact: always readable']);

    const outside = `free/${randomName()}`;
    await registry.pushImage(outside, 'latest');
    const free = await check(`${outside}:latest`);
    assert.deepEqual([free.body.policy, free.body.verdict], [null, 'served']);
  });

  it('answers 404 for a manifest the repository does not hold and 400 for what is not an image reference', async () => {
    const missing = await api<Problem>(server.url, admin, 'GET', `/admin/v1/trust/check?image=prod/${randomName()}:v1`);
    assert.equal(missing.status, 404, missing.text);
    assert.equal(missing.headers.get('Content-Type'), 'application/problem+json');
    for (const query of ['', '?image=', '?image=prod/app', '?image=Prod/App:v1', '?image=prod/app:bad%20tag', '?image=prod/app@sha256:abc', '?image=a:b&image=c:d', '?image=prod/app:v1&extra=1', `?image=${'a'.repeat(600)}:v1`]) {
      const response = await api<Problem>(server.url, admin, 'GET', `/admin/v1/trust/check${query}`);
      assert.equal(response.status, 400, `${query}: ${response.text}`);
      assert.equal(response.headers.get('Content-Type'), 'application/problem+json');
    }
  });
});

describe('the auditors’ role', () => {
  it('reads the policies, the explanations, the signatures and the report, and changes nothing', async () => {
    const repository = `prod/${randomName()}`;
    const image = await registry.pushImage(repository, 'v1');
    const reads = [
      '/admin/v1/trust',
      '/admin/v1/trust?format=yaml',
      `/admin/v1/trust/check?image=${repository}:v1`,
      `/admin/v1/signatures?repository=${repository}&digest=${image.descriptor.digest}`,
      '/admin/v1/signatures/report',
      '/admin/v1/signatures/report?format=csv',
      '/admin/v1/audit?type=trust.changed',
    ];
    for (const path of reads) {
      const response = await api(server.url, auditor, 'GET', path);
      assert.equal(response.status, 200, `${path}: ${response.text}`);
    }
    const before = (await api(server.url, admin, 'GET', '/admin/v1/trust')).text;
    for (const [method, path, body] of [
      ['PUT', '/admin/v1/trust', { policies: [] }],
      ['PUT', '/admin/v1/trust?dryRun=true', { policies: [] }],
      ['PUT', '/admin/v1/rules', { rules: [] }],
    ] as const) {
      const response = await api<Problem>(server.url, auditor, method, path, body);
      assert.equal(response.status, 403, `${method} ${path}: ${response.text}`);
      assert.deepEqual(response.body, { type: 'about:blank', title: 'Forbidden', status: 403, detail: 'administrator rights required' });
    }
    assert.equal((await api(server.url, admin, 'GET', '/admin/v1/trust')).text, before);
  });

  it('gives nothing to a token without admin or audit, nor without a token', async () => {
    const pullOnly = await tokenFor(server.url, carol, [`repository:prod/app:pull`]);
    for (const path of ['/admin/v1/trust', '/admin/v1/trust/check?image=prod/app:v1', '/admin/v1/signatures/report']) {
      assert.equal((await api(server.url, pullOnly, 'GET', path)).status, 403, path);
      const bare = await api(server.url, undefined, 'GET', path);
      assert.equal(bare.status, 401, path);
      assert.match(bare.headers.get('WWW-Authenticate') ?? '', /^Bearer realm=/);
    }
  });
});

describe('concurrent changes', () => {
  for (const backend of ['SQLite', 'PostgreSQL'] as const) {
    it(`are diffed and audited against the set each replaces, on ${backend}`, async () => {
      const database = backend === 'PostgreSQL' ? await createTestDatabase() : undefined;
      const other = await startPortcullis({ env: { PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0', ...(database ? postgresEnv(database) : {}) } });
      try {
        const token = await adminToken(other);
        const document = { policies: [{ repositories: 'prod/**', immutableTags: ['v*'] }] };
        // The same change six times at once: one of them makes it, the others find nothing to do.
        const answers = await Promise.all(Array.from({ length: 6 }, () => api<Diff>(other.url, token, 'PUT', '/admin/v1/trust', document)));
        assert.deepEqual(answers.map((answer) => answer.status), [200, 200, 200, 200, 200, 200], answers.map((answer) => answer.text).join('\n'));
        const added = answers.filter((answer) => answer.body.added.length > 0);
        assert.equal(added.length, 1, answers.map((answer) => answer.text).join('\n'));
        assert.deepEqual(added[0]?.body.added, ['prod/**']);
        const events = await api<{ events: TrustEvent[] }>(other.url, token, 'GET', '/admin/v1/audit?type=trust.changed');
        assert.deepEqual(events.body.events.map((event) => event.details?.added), [['prod/**']]);
      } finally {
        await other.stop();
        await database?.drop();
      }
    });
  }
});
