// Portcullis against a real Active Directory (Samba's AD domain controller, test/support/samba-ad.ts),
// configured as an AD administrator would: ldaps://, sAMAccountName, userPrincipalName, the CORP
// domain, groups searched with nested: false, and a user filter that does NOT exclude disabled
// accounts. One domain controller for the whole file.
//
// What Samba does (and AD documents): a bind with the RIGHT password of a disabled account answers
// `data 533`, of an expired one `701`, of one that must change its password `773`; the same binds
// with a WRONG password answer `data 52e`, as for any wrong password. A locked account answers
// `775` whatever the password. So only the first three are told to the client; "locked" goes to
// the audit log only (telling it would tell anyone which names exist).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { LdapIdentityProvider } from '../../src/auth/identity/ldap.js';
import type { Identity } from '../../src/auth/identity/provider.js';
import type { LdapConfig } from '../../src/config/config.js';
import { AD_DOMAIN, AD_LOCKOUT_THRESHOLD, AD_UPN_SUFFIX, startSambaAd, type RunningSambaAd } from '../support/samba-ad.js';
import { makeSelfSignedCert } from '../support/slapd.js';
import { CLI, startPortcullis, type RunningRegistry } from '../support/server.js';
import { adminToken, api, basic, decodeJwt, postToken, requestFrom, type AccessEntry, type RawResponse } from './support.js';

let ad: RunningSambaAd;
let server: RunningRegistry;
let admin: string;

const RULES = [
  { subject: 'group:Domain Users', repositories: 'corp/**', actions: ['pull'] },
  { subject: 'group:developers', repositories: 'dev/**', actions: ['pull', 'push'] },
];
const SCOPES = ['repository:corp/base:pull', 'repository:dev/app:pull,push'];
const GENERIC = 'invalid username or password';

/** Settings an AD administrator writes, as environment variables. */
function adEnv(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    PORTCULLIS_AUTH_LDAP_URL: ad.ldapsUrl,
    PORTCULLIS_AUTH_LDAP_CA_FILE: ad.caFile,
    PORTCULLIS_AUTH_LDAP_BIND_DN: ad.bindDn,
    PORTCULLIS_AUTH_LDAP_BIND_PASSWORD: ad.bindPassword,
    PORTCULLIS_AUTH_LDAP_USER_BASE_DN: ad.usersDn,
    PORTCULLIS_AUTH_LDAP_USER_FILTER: '(objectClass=user)',
    PORTCULLIS_AUTH_LDAP_USER_USERNAME_ATTRIBUTE: 'sAMAccountName',
    PORTCULLIS_AUTH_LDAP_USER_UPN_ATTRIBUTE: 'userPrincipalName',
    PORTCULLIS_AUTH_LDAP_USER_DOMAINS: AD_DOMAIN,
    PORTCULLIS_AUTH_LDAP_GROUPS_SOURCE: 'search',
    PORTCULLIS_AUTH_LDAP_GROUPS_BASE_DN: ad.baseDn,
    PORTCULLIS_AUTH_LDAP_GROUPS_NESTED: 'false',
    PORTCULLIS_AUTH_LDAP_GROUPS_CACHE_TTL_SECONDS: '1',
    // Below the domain's lockout threshold (5): at most 3 binds per name from one address.
    PORTCULLIS_AUTH_LOGIN_THROTTLE_FREE_FAILURES_PER_NAME_AND_ADDRESS: '2',
    ...overrides,
  };
}

function providerConfig(overrides: Partial<LdapConfig> = {}): LdapConfig {
  return {
    url: ad.ldapsUrl,
    startTls: false,
    caFile: ad.caFile,
    bindDn: ad.bindDn,
    bindPassword: ad.bindPassword,
    timeoutSeconds: 5,
    poolSize: 2,
    user: { baseDn: ad.usersDn, filter: '(objectClass=user)', usernameAttribute: 'sAMAccountName', upnAttribute: 'userPrincipalName', domains: [AD_DOMAIN] },
    groups: { source: 'search', baseDn: ad.baseDn, nameAttribute: 'cn', nested: false, maxDepth: 5, cacheTtlSeconds: 0, cacheMaxEntries: 100 },
    ...overrides,
  };
}

/** Every log line of the providers made here, to check what an operator sees. */
const run = promisify(execFile);
const logLines: string[] = [];
const log = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) });

async function withProvider<T>(config: LdapConfig, work: (p: LdapIdentityProvider) => Promise<T>): Promise<T> {
  const provider = new LdapIdentityProvider(config, log);
  try {
    return await work(provider);
  } finally {
    await provider.close();
  }
}

function tokenUrl(scopes: string[] = SCOPES): string {
  const query = new URLSearchParams({ service: 'portcullis' });
  for (const scope of scopes) query.append('scope', scope);
  return `${server.url}/auth/token?${query.toString()}`;
}

/** GET /auth/token with Basic credentials from a chosen loopback address. */
function login(username: string, password: string, from = '127.0.0.1', url = tokenUrl()): Promise<RawResponse> {
  return requestFrom(from, url, { headers: { Authorization: basic({ username, password }) } });
}

function tokenOf(response: RawResponse): { sub: string; access: AccessEntry[] } {
  assert.equal(response.status, 200, response.body);
  const { payload } = decodeJwt((JSON.parse(response.body) as { token: string }).token);
  return { sub: payload.sub, access: payload.access };
}

function errorMessage(response: RawResponse): string {
  return (JSON.parse(response.body) as { errors: { message: string }[] }).errors[0]?.message ?? '';
}

interface AuditEvent {
  type: string;
  actor?: string;
  clientIp?: string;
  details?: Record<string, unknown>;
}

async function auditEvents(type: string, on = server): Promise<AuditEvent[]> {
  const token = on === server ? admin : await adminToken(on);
  const response = await api<{ events: AuditEvent[] }>(on.url, token, 'GET', `/admin/v1/audit?type=${type}&limit=1000`);
  assert.equal(response.status, 200, response.text);
  return response.body.events;
}

async function lastFailureReason(actor: string): Promise<unknown> {
  return (await auditEvents('login.failure')).find((event) => event.actor === actor)?.details?.reason;
}

async function refreshTokenOf(username: string, password: string): Promise<string> {
  const response = await postToken(server.url, { grant_type: 'password', username, password, access_type: 'offline', client_id: 'tests', scope: SCOPES[0] as string });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return (JSON.parse(text) as { refresh_token: string }).refresh_token;
}

async function refresh(refreshToken: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await postToken(server.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: 'tests', scope: SCOPES[0] as string });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

const groupNames = (identity: Identity | undefined): string[] => (identity?.groups ?? []).map((g) => g.name).sort();

before(async () => {
  ad = await startSambaAd();
  server = await startPortcullis({ env: adEnv() });
  admin = await adminToken(server);
  const applied = await api(server.url, admin, 'PUT', '/admin/v1/rules', { rules: RULES });
  assert.equal(applied.status, 200, applied.text);
});
after(async () => {
  await server?.stop();
  await ad?.stop();
});

describe('one account, three spellings', () => {
  it('alice, ALICE, alice@corp.example.org and CORP\\alice reach one account and one subject', async () => {
    const spellings = ['alice', 'ALICE', `alice@${AD_UPN_SUFFIX}`, `Alice@${AD_UPN_SUFFIX.toUpperCase()}`, `${AD_DOMAIN}\\alice`, 'corp\\ALICE'];
    for (const username of spellings) {
      const token = tokenOf(await login(username, ad.password('alice')));
      assert.equal(token.sub, 'alice', username);
      assert.deepEqual(
        token.access,
        [
          { type: 'repository', name: 'corp/base', actions: ['pull'] },
          { type: 'repository', name: 'dev/app', actions: ['pull', 'push'] },
        ],
        username,
      );
    }
  });

  it('a down-level name of another domain, or a UPN nobody has, reaches nobody', async () => {
    for (const username of ['OTHER\\alice', `alice@other.example.org`, '\\alice', `${AD_DOMAIN}\\`]) {
      const response = await login(username, ad.password('alice'), '127.0.7.1');
      assert.equal(response.status, 401, `${username}: ${response.body}`);
      assert.equal(errorMessage(response), GENERIC);
    }
    assert.equal(await lastFailureReason(`${AD_DOMAIN}\\`), 'unknown_user');
  });
});

describe('Active Directory groups', () => {
  it('groups.source search with nested: false finds AD groups (objectClass group) and the primary group Domain Users', async () => {
    // bob is in platform-team, which is in developers: without nesting, Domain Users only.
    const bob = tokenOf(await login('bob', ad.password('bob')));
    assert.deepEqual(bob.access, [{ type: 'repository', name: 'corp/base', actions: ['pull'] }]);
    const identity = await withProvider(providerConfig(), (p) => p.lookup('bob'));
    assert.deepEqual(groupNames(identity), ['Domain Users', 'platform-team']);
    assert.equal(identity?.groups.find((g) => g.name === 'Domain Users')?.dn, `CN=Domain Users,${ad.usersDn}`);
  });

  it('nested: true uses IN_CHAIN from the user and from the primary group; memberOf and StartTLS agree', async () => {
    const nested = providerConfig({ groups: { ...providerConfig().groups, nested: true } });
    const viaChain = await withProvider(nested, (p) => p.authenticate('bob', ad.password('bob')));
    // BUILTIN\Users holds Domain Users: reached through the primary group.
    assert.deepEqual(groupNames(viaChain), ['Domain Users', 'Users', 'developers', 'platform-team']);
    const memberOf = providerConfig({ startTls: true, url: ad.ldapUrl, groups: { ...providerConfig().groups, source: 'memberOf', nested: false } });
    assert.deepEqual(groupNames(await withProvider(memberOf, (p) => p.authenticate('alice', ad.password('alice')))), ['Domain Users', 'developers']);
  });
});

describe('bind refusals say why', () => {
  const cases = [
    { user: 'dave', reason: 'disabled', advice: /account is disabled; ask your directory administrator/ },
    { user: 'erin', reason: 'must_change_password', advice: /password must be changed/ },
    { user: 'frank', reason: 'account_expired', advice: /account has expired/ },
  ] as const;

  it('disabled, expired and must-change accounts: the 401 says what to do (docker prints it), the audit says why', async () => {
    for (const { user, reason, advice } of cases) {
      const response = await login(user, ad.password(user), '127.0.7.2');
      assert.equal(response.status, 401, response.body);
      assert.match(errorMessage(response), advice, user);
      assert.equal(await lastFailureReason(user), reason, user);
      // The OAuth2 form says the same in error_description.
      const posted = await postToken(server.url, { grant_type: 'password', username: user, password: ad.password(user), client_id: 'tests' });
      const body = (await posted.json()) as { error: string; error_description: string };
      assert.equal(posted.status, 400);
      assert.equal(body.error, 'invalid_grant');
      assert.match(body.error_description, advice, user);
    }
  });

  it('a wrong password reads the same for every account, disabled or not, and for nobody', async () => {
    for (const [user, reason] of [['dave', 'wrong_password'], ['alice', 'wrong_password'], ['nobody-here', 'unknown_user']] as const) {
      const response = await login(user, 'Not-The-Password-1!', '127.0.7.3');
      assert.equal(response.status, 401, response.body);
      assert.equal(errorMessage(response), GENERIC, user);
      assert.equal(await lastFailureReason(user), reason, user);
    }
  });

  it('a locked account: AD says 775 for any password, so the client reads the generic text; the audit says locked; its refresh token stops', async () => {
    const refreshToken = await refreshTokenOf('gina', ad.password('gina'));
    assert.equal((await refresh(refreshToken)).status, 200);
    for (let i = 0; i < AD_LOCKOUT_THRESHOLD; i++) await ad.tryBind(ad.userDn('gina'), 'Wrong-Pass-1!');
    assert.match(await ad.tryBind(ad.userDn('gina'), ad.password('gina')), /data 775/, 'the domain locked gina');
    for (const password of [ad.password('gina'), 'Wrong-Pass-1!']) {
      const response = await login('gina', password, '127.0.7.4');
      assert.equal(response.status, 401, response.body);
      assert.equal(errorMessage(response), GENERIC);
      assert.equal(await lastFailureReason('gina'), 'locked');
    }
    const refused = await refresh(refreshToken);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error, 'invalid_grant');
  });
});

describe('directory changes take effect', () => {
  it('disabling an account ends its refresh token at once (user.filter does not exclude disabled accounts); enabling restores it', async () => {
    const refreshToken = await refreshTokenOf('henry', ad.password('henry'));
    assert.equal((await refresh(refreshToken)).status, 200);
    await ad.setDisabled('henry', true);
    try {
      const refused = await refresh(refreshToken);
      assert.equal(refused.status, 400, JSON.stringify(refused.body));
      assert.equal(refused.body.error, 'invalid_grant');
    } finally {
      await ad.setDisabled('henry', false);
    }
    assert.equal((await refresh(refreshToken)).status, 200);
  });

  it('a password reset (pwdLastSet) ends refresh tokens issued before it, not those issued after', async () => {
    const before = await refreshTokenOf('henry', ad.password('henry'));
    await ad.setPassword('henry', 'Henry-New-Pass-2026!');
    const refused = await refresh(before);
    assert.equal(refused.status, 400, JSON.stringify(refused.body));
    const afterReset = await refreshTokenOf('henry', 'Henry-New-Pass-2026!');
    assert.equal((await refresh(afterReset)).status, 200);
    assert.equal((await refresh(before)).status, 400, 'the old token stays dead');
  });
});

describe('lockout is not a weapon', () => {
  it('failures from one address reach AD at most 3 times whatever the spelling, so AD never locks the owner out', async () => {
    const from = '127.0.7.5';
    const spellings = ['ivan', 'IVAN', `${AD_DOMAIN}\\ivan`, `ivan@${AD_UPN_SUFFIX}`, 'Ivan', 'ivan', `${AD_DOMAIN}\\IVAN`];
    const statuses: number[] = [];
    for (const username of spellings) statuses.push((await login(username, 'Wrong-Pass-1!', from)).status);
    assert.ok(statuses.every((status) => status === 401 || status === 429), statuses.join(' '));
    const { badPwdCount } = await ad.read(ad.userDn('ivan'), ['badPwdCount']);
    assert.deepEqual(badPwdCount, ['3'], `binds that reached AD (statuses ${statuses.join(' ')})`);
    assert.ok(Number(badPwdCount?.[0]) < AD_LOCKOUT_THRESHOLD);
    // The owner, from an address of their own, with any spelling.
    assert.equal(tokenOf(await login(`${AD_DOMAIN}\\ivan`, ad.password('ivan'), '127.0.7.6')).sub, 'ivan');
  });
});

describe('configuration errors are reported as such', () => {
  it('probe(): a refused service bind names auth.ldap.bindDn, a missing base DN names auth.ldap.user.baseDn', async () => {
    await withProvider(providerConfig(), (p) => p.probe());
    await assert.rejects(
      withProvider(providerConfig({ bindPassword: 'Not-The-Svc-Pass-1!' }), (p) => p.probe()),
      (err: Error) => err.name === 'ConfigError' && /^auth\.ldap\.bindDn: the directory refused the service account .*registry-svc/.test(err.message),
    );
    const missing = `OU=nowhere,${ad.baseDn}`;
    await assert.rejects(
      withProvider(providerConfig({ user: { ...providerConfig().user, baseDn: missing } }), (p) => p.probe()),
      (err: Error) => err.name === 'ConfigError' && err.message === `auth.ldap.user.baseDn: "${missing}" does not exist in the directory`,
    );
    await assert.rejects(
      withProvider(providerConfig({ groups: { ...providerConfig().groups, baseDn: missing } }), (p) => p.probe()),
      (err: Error) => err.name === 'ConfigError' && err.message.startsWith('auth.ldap.groups.baseDn: '),
    );
    // Samba refuses simple binds without TLS, like a hardened AD: that is a setting too.
    await assert.rejects(
      withProvider(providerConfig({ url: ad.ldapUrl }), (p) => p.probe()),
      (err: Error) => err.name === 'ConfigError' && err.message.startsWith('auth.ldap.url: the directory requires TLS'),
    );
  });

  it('a wrong service password stops the start naming auth.ldap.bindDn; met at run time, a 503 and one error line', async () => {
    const message = await startupFailure(adEnv({ PORTCULLIS_AUTH_LDAP_BIND_PASSWORD: 'Not-The-Svc-Pass-1!' }));
    assert.match(message, /^portcullis: auth\.ldap\.bindDn: the directory refused the service account/);
    assert.ok(!message.includes('Not-The-Svc-Pass-1!'));
    // A password rotated in the directory under a running server: the login is the registry's
    // problem (503, tell the administrator), logged once as a configuration error.
    const lines = logLines.length;
    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        withProvider(providerConfig({ bindPassword: 'Not-The-Svc-Pass-1!' }), (p) => p.login('alice', ad.password('alice'))),
        (err: Error & { setting?: string; code?: string }) =>
          err.setting === 'auth.ldap.bindDn' && err.code === 'UNAVAILABLE' && /tell the registry's administrator/.test(err.message),
      );
    }
    const logged = logLines.slice(lines).filter((line) => line.includes('LDAP configuration error'));
    assert.ok(logged.length >= 1 && logged.length <= 3, logged.join('\n'));
    assert.match(logged[0] ?? '', /"level":50/);
    assert.match(logged[0] ?? '', /auth\.ldap\.bindDn: the directory refused the service account/);
    assert.ok(!logLines.some((line) => line.includes('Not-The-Svc-Pass-1!')));
  });

  it('a certificate that does not name the URL\'s host: the start stops with one short line naming both, no certificate dump', async () => {
    // 127.0.0.1 forwards to the DC, whose certificate names dc1.corp.example.org, localhost and its own address only.
    const proxy = await forwardTo(ad.host, 636);
    const viaProxy = `ldaps://127.0.0.1:${proxy.port}`;
    try {
      const message = await startupFailure(adEnv({ PORTCULLIS_AUTH_LDAP_URL: viaProxy }));
      assert.match(message, /^portcullis: auth\.ldap\.url: the directory's certificate does not name the host 127\.0\.0\.1 of the URL \(it names DNS:dc1\.corp\.example\.org, DNS:localhost, IP:127\.\d+\.\d+\.\d+\)/);
      for (const dump of ['BEGIN CERTIFICATE', 'pubkey', '"raw"', 'fingerprint', 'modulus']) assert.ok(!message.includes(dump), `the message carries ${dump}`);
      assert.ok(message.length < 1500, message);
      const lines = logLines.length;
      await assert.rejects(
        withProvider(providerConfig({ url: viaProxy }), (p) => p.login('alice', ad.password('alice'))),
        (err: Error & { setting?: string; code?: string }) => err.setting === 'auth.ldap.url' && err.code === 'UNAVAILABLE',
      );
      const logged = logLines.slice(lines);
      for (const dump of ['BEGIN CERTIFICATE', 'pubkey', '"raw"', 'fingerprint', 'modulus']) assert.ok(!logged.join('').includes(dump), `the log carries ${dump}`);
      await assert.rejects(
        withProvider(providerConfig({ url: viaProxy }), (p) => p.probe()),
        (err: Error) => err.name === 'ConfigError' && err.message.startsWith('auth.ldap.url: the directory\'s certificate does not name the host 127.0.0.1'),
      );
    } finally {
      await proxy.close();
    }
  });

  it('a certificate from a CA that is not trusted names auth.ldap.caFile', async () => {
    const other = (await makeSelfSignedCert(ad.dir, 'other-ca')).certFile;
    const lines = logLines.length;
    await assert.rejects(
      withProvider(providerConfig({ caFile: other }), (p) => p.login('alice', ad.password('alice'))),
      (err: Error & { setting?: string; code?: string }) => err.setting === 'auth.ldap.caFile' && err.code === 'UNAVAILABLE',
    );
    const logged = logLines.slice(lines).filter((line) => line.includes('LDAP configuration error'));
    assert.equal(logged.length, 1);
    assert.match(logged[0] ?? '', /auth\.ldap\.caFile: the certificate of 127\.\d+\.\d+\.\d+ is not trusted \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\); set auth\.ldap\.caFile/);
  });
});

/** A TCP forwarder on 127.0.0.1 (a name the DC's certificate does not carry). */
/** Starts `portcullis serve` expecting it to refuse; resolves with what it printed on stderr. */
async function startupFailure(env: Record<string, string>): Promise<string> {
  const dataDir = await mkdtemp(join(tmpdir(), 'portcullis-ad-start-'));
  try {
    await run(process.execPath, [CLI, 'serve'], {
      env: { ...process.env, PORTCULLIS_DATA_DIR: dataDir, PORTCULLIS_LISTEN: '127.0.0.1:0', PORTCULLIS_ADMIN_PASSWORD: 'unused-password-1', ...env },
      timeout: 30_000,
    });
  } catch (error) {
    const failure = error as { code: number; stdout: string; stderr: string };
    assert.equal(failure.code, 2, failure.stderr);
    return failure.stderr;
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
  throw new Error('the server started with a configuration the directory refuses');
}

async function forwardTo(host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const proxy: Server = createServer((client) => {
    const target = connect(port, host);
    sockets.add(client).add(target);
    client.pipe(target).pipe(client);
    const end = (): void => {
      client.destroy();
      target.destroy();
    };
    client.on('error', end).on('close', end);
    target.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const address = proxy.address();
  return {
    port: typeof address === 'object' && address ? address.port : 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        proxy.close(() => resolve());
      }),
  };
}
