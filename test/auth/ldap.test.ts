// LdapIdentityProvider against a real OpenLDAP slapd (test/support/slapd.ts): transports, groups,
// refusals before any bind, filter injection, the group cache, and an unreachable directory.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { after, afterEach, before, describe, mock, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Attribute, Change, Client, type Control, type DN, type SearchOptions, type SearchResult } from 'ldapts';
import { pino, type Logger } from 'pino';
import { GroupCache } from '../../src/auth/identity/group-cache.js';
import { firstRdnValue, LdapIdentityProvider } from '../../src/auth/identity/ldap.js';
import { accountState, adBindCode, fileTimeToMs, generalizedTimeToMs, ppolicyError, primaryGroupSid } from '../../src/auth/identity/ldap-account.js';
import type { Identity } from '../../src/auth/identity/provider.js';
import type { LdapConfig } from '../../src/config/config.js';
import { BackendUnavailableError } from '../../src/registry/errors.js';
import { makeSelfSignedCert, startSlapd, type RunningSlapd } from '../support/slapd.js';

/** Resolves once every thread of the process is stopped (state T in /proc). */
async function stopped(pid: number): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const threads = await readdir(`/proc/${pid}/task`);
    const states = await Promise.all(threads.map(async (tid) => (await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8')).replace(/^.*\) /s, '')[0]));
    if (states.every((state) => state === 'T')) return;
    await sleep(5);
  }
  throw new Error(`process ${pid} did not stop`);
}

type Overrides = Partial<Omit<LdapConfig, 'groups'>> & { groups?: Partial<LdapConfig['groups']> };

// Every log line of every provider, to prove no password is ever logged.
const logLines: string[] = [];
const log: Logger = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(line) });

function ldapConfig(slapd: RunningSlapd, overrides: Overrides = {}): LdapConfig {
  const { groups, ...rest } = overrides;
  return {
    url: slapd.url,
    startTls: false,
    caFile: slapd.caFile,
    bindDn: slapd.bindDn,
    bindPassword: slapd.bindPassword,
    timeoutSeconds: 2,
    poolSize: 2,
    user: { baseDn: `ou=people,${slapd.baseDn}`, filter: '(objectClass=inetOrgPerson)', usernameAttribute: 'uid', domains: [] },
    ...rest,
    groups: {
      source: 'search',
      baseDn: `ou=groups,${slapd.baseDn}`,
      nameAttribute: 'cn',
      nested: true,
      maxDepth: 5,
      cacheTtlSeconds: 0,
      cacheMaxEntries: 100,
      ...groups,
    },
  };
}

// Providers made by a test are closed after it, whatever happened.
const providers: LdapIdentityProvider[] = [];
function provider(config: LdapConfig): LdapIdentityProvider {
  const p = new LdapIdentityProvider(config, log);
  providers.push(p);
  return p;
}
afterEach(async () => {
  await Promise.all(providers.splice(0).map((p) => p.close()));
});

function groupNames(identity: Identity | undefined): string[] {
  assert.ok(identity, 'expected an identity');
  return identity.groups.map((g) => g.name).sort();
}

/** Counts ldapts binds (service and user) made while `work` runs. */
async function countBinds(work: () => Promise<unknown>): Promise<string[]> {
  const spy = mock.method(Client.prototype, 'bind');
  try {
    await work();
    return spy.mock.calls.map((call) => String(call.arguments[0]));
  } finally {
    spy.mock.restore();
  }
}

const IN_CHAIN = '1.2.840.113556.1.4.1941';
type Search = (this: Client, base: DN | string, options?: SearchOptions, controls?: Control | Control[]) => Promise<SearchResult>;
const realSearch: Search = Client.prototype.search;

/**
 * Records the base and filter of every ldapts search while `work` runs; `fake` may answer a search
 * itself (to play Active Directory), otherwise the real directory answers.
 */
async function recordSearches(
  work: () => Promise<unknown>,
  fake?: (base: string, filter: string) => SearchResult | undefined,
): Promise<{ base: string; filter: string }[]> {
  const seen: { base: string; filter: string }[] = [];
  const spy = mock.method(Client.prototype, 'search', function (this: Client, base: DN | string, options: SearchOptions = {}, controls?: Control | Control[]) {
    const entry = { base: String(base), filter: String(options.filter ?? '') };
    seen.push(entry);
    const faked = fake?.(entry.base, entry.filter);
    return faked ? Promise.resolve(faked) : realSearch.call(this, base, options, controls);
  });
  try {
    await work();
    return seen;
  } finally {
    spy.mock.restore();
  }
}

function assertUnavailable(err: unknown, cause?: RegExp): true {
  assert.ok(err instanceof BackendUnavailableError, `expected BackendUnavailableError, got ${String(err)}`);
  assert.equal(err.code, 'UNAVAILABLE');
  if (cause) assert.match(String((err.cause as Error | undefined)?.message), cause);
  return true;
}

/**
 * Waits until slapd's idle timeout has closed a probe connection that was used after the pool's:
 * slapd closes idle connections in one pass, so the pooled one is closed by then too.
 */
async function idleConnectionsClosed(slapd: RunningSlapd): Promise<void> {
  const probe = new Client({ url: slapd.url, timeout: 2000 });
  await probe.bind(slapd.bindDn, slapd.bindPassword);
  const deadline = Date.now() + 5000;
  while (probe.isConnected && Date.now() < deadline) await sleep(50);
  await probe.unbind();
  assert.ok(Date.now() < deadline, 'slapd did not close the idle connection');
  await sleep(50); // let the pool's socket see its close too
}

const groupDn = (slapd: RunningSlapd, cn: string): string => `cn=${cn},ou=groups,${slapd.baseDn}`;
const userDn = (slapd: RunningSlapd, uid: string): string => `uid=${uid},ou=people,${slapd.baseDn}`;

describe('LDAP helpers', () => {
  test('GroupCache: TTL, replace-not-merge, bounded with the oldest evicted, TTL 0 = off', () => {
    let now = 1_000;
    const cache = new GroupCache(1, 2, () => now);
    cache.set('a', [{ name: 'developers' }, { name: 'platform' }]);
    cache.set('a', [{ name: 'docker' }]);
    assert.deepEqual(cache.get('a'), [{ name: 'docker' }]);
    now += 999;
    assert.ok(cache.get('a'));
    now += 1;
    assert.equal(cache.get('a'), undefined);
    cache.set('a', []);
    cache.set('b', []);
    cache.set('c', []);
    assert.equal(cache.size, 2);
    assert.equal(cache.get('a'), undefined);
    const off = new GroupCache(0, 10);
    off.set('a', [{ name: 'x' }]);
    assert.equal(off.get('a'), undefined);
  });

  test('account state: AD userAccountControl, lockout, expiry, pwdLastSet; OpenLDAP ppolicy attributes', () => {
    const of = (attributes: Record<string, string>) => accountState((name) => (attributes[name] === undefined ? [] : [attributes[name]]), Date.UTC(2026, 10, 30));
    const setAt = 134405080463496780n; // a FILETIME in 2026
    assert.deepEqual(of({ userAccountControl: '512', pwdLastSet: String(setAt), accountExpires: '9223372036854775807' }), {
      passwordChangedAt: fileTimeToMs(setAt),
    });
    assert.equal(fileTimeToMs(setAt), Date.UTC(2026, 10, 30, 10, 27, 26, 349));
    assert.equal(of({ userAccountControl: '514' }).blocked, 'disabled');
    assert.equal(of({ userAccountControl: '512', 'msDS-User-Account-Control-Computed': '16' }).blocked, 'locked');
    assert.equal(of({ userAccountControl: '512', 'msDS-User-Account-Control-Computed': '0', lockoutTime: '134405080463496780' }).blocked, undefined, 'an expired lockout');
    assert.equal(of({ userAccountControl: '512', pwdLastSet: '0', 'msDS-User-Account-Control-Computed': '8388608' }).blocked, 'must_change_password');
    assert.equal(of({ userAccountControl: '512', 'msDS-User-Account-Control-Computed': '8388608' }).blocked, 'password_expired');
    assert.equal(of({ userAccountControl: '512', accountExpires: '116444736000000000' }).blocked, 'account_expired');
    assert.equal(of({ pwdAccountLockedTime: '000001010000Z' }).blocked, 'disabled');
    assert.equal(of({ pwdAccountLockedTime: '20261130101500Z' }).blocked, 'locked');
    assert.equal(of({ pwdReset: 'TRUE' }).blocked, 'must_change_password');
    assert.deepEqual(of({ pwdChangedTime: '20261130101500Z' }), { passwordChangedAt: Date.UTC(2026, 10, 30, 10, 15) });
    assert.equal(generalizedTimeToMs('20261130111500.5+0100'), Date.UTC(2026, 10, 30, 10, 15, 0, 500));
    assert.equal(generalizedTimeToMs('not a time'), undefined);
  });

  test('AD bind sub-codes, the ppolicy response control and the primary group SID', () => {
    assert.equal(adBindCode('80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 533, v1db1'), '533');
    assert.equal(adBindCode('Invalid credentials'), undefined);
    // SEQUENCE { warning [0] { timeBeforeExpiration [0] 100 }, error [1] changeAfterReset }
    assert.equal(ppolicyError(Buffer.from('3008a003800164810102', 'hex')), 2);
    assert.equal(ppolicyError(Buffer.from('3000', 'hex')), undefined);
    assert.equal(ppolicyError(Buffer.from('30ff', 'hex')), undefined, 'a length past the end');
    // S-1-5-21-a-b-c-1104 → S-1-5-21-a-b-c-513
    const user = Buffer.from('010500000000000515000000313601e6e601f613d44fc42a50040000', 'hex');
    assert.equal(primaryGroupSid(user, 513)?.toString('hex'), '010500000000000515000000313601e6e601f613d44fc42a01020000');
    assert.equal(primaryGroupSid(user.subarray(0, 10), 513), undefined);
  });

  test('firstRdnValue decodes RFC 4514 escapes and refuses other attributes', () => {
    assert.equal(firstRdnValue('cn=developers,ou=groups,dc=example,dc=org', 'cn'), 'developers');
    assert.equal(firstRdnValue('CN=Dev\\2C Ops\\, EU,OU=Groups', 'cn'), 'Dev, Ops, EU');
    assert.equal(firstRdnValue('cn=Caf\\C3\\A9 \\2B \\"q\\"+uid=x,dc=org', 'cn'), 'Café + "q"');
    assert.equal(firstRdnValue('cn=Übersicht,dc=org', 'cn'), 'Übersicht');
    assert.equal(firstRdnValue('ou=groups,dc=org', 'cn'), undefined);
    assert.equal(firstRdnValue('cn=#04024869,dc=org', 'cn'), undefined);
  });
});

describe('LDAP identity provider against OpenLDAP (memberof overlay)', () => {
  let slapd: RunningSlapd;
  let wrongCa: string;

  before(async () => {
    slapd = await startSlapd({ memberOf: 'overlay' });
    wrongCa = (await makeSelfSignedCert(slapd.dir, 'wrong-ca')).certFile;
  });
  after(async () => {
    await slapd?.stop();
  });

  test('alice logs in over ldap:// with direct, nested (platform) and posixGroup (docker) groups', async () => {
    const identity = await provider(ldapConfig(slapd)).authenticate('alice', 'alice-pass');
    assert.ok(identity);
    assert.equal(identity.username, 'alice');
    assert.equal(identity.provider, 'ldap');
    assert.equal(identity.dn, userDn(slapd, 'alice'));
    assert.deepEqual(groupNames(identity), ['developers', 'docker', 'platform']);
    assert.equal(identity.groups.find((g) => g.name === 'platform')?.dn, groupDn(slapd, 'platform'));
  });

  test('StartTLS with the CA works; with a wrong CA it is BackendUnavailableError', async () => {
    const startTls = mock.method(Client.prototype, 'startTLS');
    try {
      const ok = await provider(ldapConfig(slapd, { startTls: true })).authenticate('alice', 'alice-pass');
      assert.deepEqual(groupNames(ok), ['developers', 'docker', 'platform']);
      // Both the service connection and the user's own bind connection were upgraded before binding.
      assert.equal(startTls.mock.callCount(), 2);
    } finally {
      startTls.mock.restore();
    }
    const wrong = provider(ldapConfig(slapd, { startTls: true, caFile: wrongCa }));
    await assert.rejects(wrong.authenticate('alice', 'alice-pass'), (err) => assertUnavailable(err, /certificate/i));
  });

  test('ldaps:// with the CA works (by IP and by host name); with a wrong CA it is BackendUnavailableError', async () => {
    const byIp = await provider(ldapConfig(slapd, { url: slapd.ldapsUrl })).authenticate('alice', 'alice-pass');
    assert.deepEqual(groupNames(byIp), ['developers', 'docker', 'platform']);
    const byName = await provider(ldapConfig(slapd, { url: slapd.ldapsUrl.replace('127.0.0.1', 'localhost') })).lookup('bob');
    assert.deepEqual(groupNames(byName), ['developers', 'platform', 'security']);
    const wrong = provider(ldapConfig(slapd, { url: slapd.ldapsUrl, caFile: wrongCa }));
    await assert.rejects(wrong.authenticate('alice', 'alice-pass'), (err) => assertUnavailable(err, /certificate/i));
    await assert.rejects(wrong.lookup('alice'), (err) => assertUnavailable(err));
  });

  test('wrong password and unknown user are undefined, not errors', async () => {
    const p = provider(ldapConfig(slapd));
    assert.equal(await p.authenticate('alice', 'bob-pass'), undefined);
    assert.equal(await p.authenticate('alice', 'alice-pass '), undefined);
    assert.equal(await p.authenticate('mallory', 'mallory-pass'), undefined);
    assert.equal(await p.lookup('mallory'), undefined);
  });

  test('the username is the directory value; lookup() reads groups without a password', async () => {
    const p = provider(ldapConfig(slapd));
    const shouted = await p.authenticate('ALICE', 'alice-pass');
    assert.equal(shouted?.username, 'alice');
    const bob = await p.lookup('bob');
    assert.equal(bob?.dn, userDn(slapd, 'bob'));
    assert.deepEqual(groupNames(bob), ['developers', 'platform', 'security']);
    const dave = await p.lookup('dave');
    assert.deepEqual(groupNames(dave), ['docker']);
  });

  test('empty password, empty/overlong/control-character usernames: undefined, and no bind at all', async () => {
    const p = provider(ldapConfig(slapd));
    const binds = await countBinds(async () => {
      assert.equal(await p.authenticate('alice', ''), undefined);
      assert.equal(await p.authenticate('', 'alice-pass'), undefined);
      assert.equal(await p.authenticate('a'.repeat(257), 'alice-pass'), undefined);
      assert.equal(await p.authenticate('alice\u0000', 'alice-pass'), undefined);
      assert.equal(await p.authenticate('alice\n', 'alice-pass'), undefined);
      assert.equal(await p.lookup(''), undefined);
    });
    assert.deepEqual(binds, []);
    // The spy does see binds: a real login is a service bind and a user bind.
    const login = await countBinds(() => p.authenticate('alice', 'alice-pass'));
    assert.deepEqual(login, [slapd.bindDn, userDn(slapd, 'alice')]);
  });

  test('filter injection: *, *)(uid=* and alic* match nobody, even with a valid password', async () => {
    const p = provider(ldapConfig(slapd));
    for (const username of ['*', '*)(uid=*', 'alic*', 'alice)(uid=*', 'alice)(|(uid=*', '\\2a']) {
      assert.equal(await p.authenticate(username, 'alice-pass'), undefined, username);
      assert.equal(await p.lookup(username), undefined, username);
    }
  });

  test('memberOf source (overlay): direct groups from memberOf, nested ones from the groups\' memberOf', async () => {
    const nested = provider(ldapConfig(slapd, { groups: { source: 'memberOf', baseDn: undefined } }));
    const alice = await nested.authenticate('alice', 'alice-pass');
    // docker is a posixGroup: the memberof overlay only maintains groupOfNames membership.
    assert.deepEqual(groupNames(alice), ['developers', 'platform']);
    assert.deepEqual(groupNames(await nested.lookup('carol')), ['admins', 'security']);
    const direct = provider(ldapConfig(slapd, { groups: { source: 'memberOf', nested: false } }));
    assert.deepEqual(groupNames(await direct.lookup('alice')), ['developers']);
  });

  test('search source without groups.baseDn falls back to memberOf', async () => {
    const p = provider(ldapConfig(slapd, { groups: { source: 'search', baseDn: undefined } }));
    assert.deepEqual(groupNames(await p.lookup('alice')), ['developers', 'platform']);
  });

  test('nested groups are bounded by maxDepth and not followed when nested is false', async () => {
    // top → middle → platform → developers → alice: four levels above alice's direct group.
    await slapd.modify(`dn: ${groupDn(slapd, 'middle')}
changetype: add
objectClass: groupOfNames
cn: middle
member: ${groupDn(slapd, 'platform')}

dn: ${groupDn(slapd, 'top')}
changetype: add
objectClass: groupOfNames
cn: top
member: ${groupDn(slapd, 'middle')}
`);
    try {
      const deep = await provider(ldapConfig(slapd)).lookup('alice');
      assert.deepEqual(groupNames(deep), ['developers', 'docker', 'middle', 'platform', 'top']);
      const shallow = await provider(ldapConfig(slapd, { groups: { maxDepth: 1 } })).lookup('alice');
      assert.deepEqual(groupNames(shallow), ['developers', 'docker', 'platform']);
      const flat = await provider(ldapConfig(slapd, { groups: { nested: false } })).lookup('alice');
      assert.deepEqual(groupNames(flat), ['developers', 'docker']);
    } finally {
      await slapd.modify(`dn: ${groupDn(slapd, 'top')}\nchangetype: delete\n\ndn: ${groupDn(slapd, 'middle')}\nchangetype: delete\n`);
    }
  });

  test('OpenLDAP: the rootDSE is read once and no Active Directory IN_CHAIN filter is ever sent', async () => {
    const p = provider(ldapConfig(slapd));
    const searches = await recordSearches(async () => {
      assert.deepEqual(groupNames(await p.lookup('alice')), ['developers', 'docker', 'platform']);
      assert.deepEqual(groupNames(await p.lookup('bob')), ['developers', 'platform', 'security']);
    });
    assert.equal(searches.filter((s) => s.base === '').length, 1, 'rootDSE read once');
    assert.ok(searches.length > 3);
    assert.ok(searches.every((s) => !s.filter.includes(IN_CHAIN)), JSON.stringify(searches));
  });

  test('Active Directory (simulated rootDSE): one IN_CHAIN search replaces the breadth-first walk', async () => {
    const adGroup = `cn=all-engineering,ou=groups,${slapd.baseDn}`;
    const playAd = (base: string, filter: string): SearchResult | undefined => {
      if (base === '') {
        return { searchEntries: [{ dn: '', supportedCapabilities: ['1.2.840.113556.1.4.800'], defaultNamingContext: slapd.baseDn }], searchReferences: [] };
      }
      if (filter.includes(IN_CHAIN)) return { searchEntries: [{ dn: adGroup, cn: 'all-engineering' }], searchReferences: [] };
      return undefined;
    };
    for (const source of ['search', 'memberOf'] as const) {
      const p = provider(ldapConfig(slapd, { groups: { source, baseDn: source === 'memberOf' ? undefined : `ou=groups,${slapd.baseDn}` } }));
      let identity: Identity | undefined;
      const searches = await recordSearches(async () => {
        identity = await p.lookup('alice');
      }, playAd);
      assert.deepEqual(identity?.groups, [{ dn: adGroup, name: 'all-engineering' }], source);
      const groupSearches = searches.filter((s) => s.base !== '' && s.base !== `ou=people,${slapd.baseDn}`);
      assert.equal(groupSearches.length, 1, `${source}: ${JSON.stringify(searches)}`);
      assert.match(groupSearches[0]?.filter ?? '', new RegExp(`member:${IN_CHAIN.replace(/\./g, '\\.')}:=uid=alice`));
      // memberOf without groups.baseDn searches from the rootDSE's defaultNamingContext.
      assert.equal(groupSearches[0]?.base, source === 'memberOf' ? slapd.baseDn : `ou=groups,${slapd.baseDn}`);
    }
  });

  test('a membership cycle ends (visited set)', async () => {
    // developers → platform → developers
    await slapd.modify(`dn: ${groupDn(slapd, 'developers')}\nchangetype: modify\nadd: member\nmember: ${groupDn(slapd, 'platform')}\n`);
    try {
      const p = provider(ldapConfig(slapd));
      assert.deepEqual(groupNames(await p.lookup('alice')), ['developers', 'docker', 'platform']);
      const viaMemberOf = provider(ldapConfig(slapd, { groups: { source: 'memberOf' } }));
      assert.deepEqual(groupNames(await viaMemberOf.lookup('alice')), ['developers', 'platform']);
    } finally {
      await slapd.modify(`dn: ${groupDn(slapd, 'developers')}\nchangetype: modify\ndelete: member\nmember: ${groupDn(slapd, 'platform')}\n`);
    }
  });

  test('service connections are pooled and reused', async () => {
    const p = provider(ldapConfig(slapd, { poolSize: 1 }));
    const sequential = await countBinds(async () => {
      for (let i = 0; i < 5; i++) assert.ok(await p.lookup('alice'));
    });
    assert.deepEqual(sequential, [slapd.bindDn]);
    const q = provider(ldapConfig(slapd, { poolSize: 2 }));
    const concurrent = await countBinds(async () => {
      const all = await Promise.all(['alice', 'bob', 'carol', 'dave', 'alice', 'bob'].map((u) => q.lookup(u)));
      assert.ok(all.every(Boolean));
    });
    assert.ok(concurrent.length <= 2, `at most poolSize service binds, saw ${concurrent.length}`);
  });

  test('removing alice from developers takes effect once the group cache TTL has passed, not before', async () => {
    const p = provider(ldapConfig(slapd, { groups: { cacheTtlSeconds: 1 } }));
    const removeAlice = `dn: ${groupDn(slapd, 'developers')}\nchangetype: modify\ndelete: member\nmember: ${userDn(slapd, 'alice')}\n`;
    const addAlice = removeAlice.replace('delete: member', 'add: member');
    assert.deepEqual(groupNames(await p.authenticate('alice', 'alice-pass')), ['developers', 'docker', 'platform']);
    const cachedAt = Date.now();
    await slapd.modify(removeAlice);
    try {
      // Within the TTL the cached groups are served; passwords are never cached.
      assert.deepEqual(groupNames(await p.lookup('alice')), ['developers', 'docker', 'platform']);
      assert.equal(await p.authenticate('alice', 'wrong'), undefined);
      await sleep(Math.max(0, 1100 - (Date.now() - cachedAt)));
      // Replaced, not merged: both developers and (through it) platform are gone.
      assert.deepEqual(groupNames(await p.authenticate('alice', 'alice-pass')), ['docker']);
    } finally {
      await slapd.modify(addAlice);
    }
  });

  test('lookup() of a deleted user is undefined (users are never cached)', async () => {
    const p = provider(ldapConfig(slapd, { groups: { cacheTtlSeconds: 60 } }));
    await slapd.modify(`dn: ${userDn(slapd, 'erin')}
changetype: add
objectClass: inetOrgPerson
uid: erin
cn: Erin Example
sn: Example
userPassword: erin-pass

dn: ${groupDn(slapd, 'security')}
changetype: modify
add: member
member: ${userDn(slapd, 'erin')}
`);
    assert.deepEqual(groupNames(await p.lookup('erin')), ['security']);
    await slapd.modify(`dn: ${userDn(slapd, 'erin')}\nchangetype: delete\n`);
    assert.equal(await p.lookup('erin'), undefined);
    assert.equal(await p.authenticate('erin', 'erin-pass'), undefined);
  });

  test('a wrong service password is a 503 naming auth.ldap.bindDn, logged once, not retried against the directory at once', async () => {
    const p = provider(ldapConfig(slapd, { bindPassword: 'not-the-secret' }));
    const lines = logLines.length;
    const binds = await countBinds(async () => {
      for (let i = 0; i < 3; i++) {
        await assert.rejects(p.login('alice', 'alice-pass'), (err: Error & { setting?: string }) => assertUnavailable(err) && err.setting === 'auth.ldap.bindDn');
      }
    });
    // Binding again and again with a wrong password would lock the service account on AD.
    assert.deepEqual(binds, [slapd.bindDn]);
    const errors = logLines.slice(lines).filter((line) => line.includes('"level":50'));
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.match(errors[0] ?? '', /LDAP configuration error: auth\.ldap\.bindDn: the directory refused the service account .*cn=registry-svc,ou=services,dc=example,dc=org.* \(invalid credentials\)/);
    await assert.rejects(p.probe(), (err: Error) => err.name === 'ConfigError' && err.message.startsWith('auth.ldap.bindDn: '));
  });

  test('a base DN that does not exist names its setting; probe() and checkHealth() pass on a good configuration', async () => {
    const missing = `ou=nowhere,${slapd.baseDn}`;
    const noUsers = provider(ldapConfig(slapd, { user: { ...ldapConfig(slapd).user, baseDn: missing } }));
    await assert.rejects(noUsers.login('alice', 'alice-pass'), (err: Error & { setting?: string }) => assertUnavailable(err) && err.setting === 'auth.ldap.user.baseDn');
    await assert.rejects(noUsers.probe(), (err: Error) => err.name === 'ConfigError' && err.message === `auth.ldap.user.baseDn: "${missing}" does not exist in the directory`);
    const noGroups = provider(ldapConfig(slapd, { groups: { baseDn: missing } }));
    await assert.rejects(noGroups.lookup('alice'), (err: Error & { setting?: string }) => assertUnavailable(err) && err.setting === 'auth.ldap.groups.baseDn');
    await assert.rejects(noGroups.checkHealth(), (err: Error & { setting?: string }) => assertUnavailable(err) && err.setting === 'auth.ldap.groups.baseDn');
    const good = provider(ldapConfig(slapd));
    await good.probe();
    await good.checkHealth();
  });

  test('no password ever reaches the log', () => {
    const all = logLines.join('\n');
    assert.ok(all.includes('"username":"alice"'), 'debug lines with usernames were written');
    for (const secret of ['alice-pass', 'bob-pass', 'erin-pass', 'svc-secret', 'not-the-secret']) {
      assert.ok(!all.includes(secret), `${secret} was logged`);
    }
  });
});

describe('LDAP identity provider against OpenLDAP with the password policy overlay (ppolicy)', () => {
  let slapd: RunningSlapd;
  before(async () => {
    slapd = await startSlapd({ ppolicy: true });
  });
  after(async () => {
    await slapd?.stop();
  });

  const setPassword = (uid: string, password: string) =>
    slapd.modify(`dn: ${userDn(slapd, uid)}\nchangetype: modify\nreplace: userPassword\nuserPassword: ${password}\n`);

  test('pwdChangedTime is the identity\'s passwordChangedAt, and moves when the password is set', async () => {
    const p = provider(ldapConfig(slapd));
    const first = (await p.lookup('alice'))?.passwordChangedAt;
    assert.ok(first !== undefined && Math.abs(first - Date.now()) < 120_000, String(first));
    await sleep(1_100); // GeneralizedTime has whole seconds
    // A self-service change (as alice): no pwdReset, a new pwdChangedTime.
    const client = new Client({ url: slapd.url });
    await client.bind(userDn(slapd, 'alice'), 'alice-pass');
    await client.modify(userDn(slapd, 'alice'), new Change({ operation: 'replace', modification: new Attribute({ type: 'userPassword', values: ['alice-pass-2'] }) }));
    await client.unbind();
    const identity = await p.authenticate('alice', 'alice-pass-2');
    assert.ok(identity?.passwordChangedAt !== undefined && identity.passwordChangedAt > first, `${identity?.passwordChangedAt} after ${first}`);
  });

  test('an administrator\'s reset: the bind succeeds but the policy says "change it first"; told, and lookup() refuses', async () => {
    await setPassword('bob', 'bob-reset-pass');
    const p = provider(ldapConfig(slapd));
    const outcome = await p.login('bob', 'bob-reset-pass');
    assert.equal(outcome.refusal?.reason, 'must_change_password');
    assert.match(outcome.refusal?.advice ?? '', /password must be changed/);
    assert.equal(await p.lookup('bob'), undefined);
    const wrong = await p.login('bob', 'not-bobs-password');
    assert.deepEqual(wrong.refusal, { reason: 'wrong_password', account: 'bob' });
  });

  test('an expired password is told only with the right password', async () => {
    await slapd.modify(`dn: ${userDn(slapd, 'dave')}\nchangetype: modify\nadd: pwdPolicySubentry\npwdPolicySubentry: cn=short,ou=policies,${slapd.baseDn}\n`);
    await sleep(2_500);
    const p = provider(ldapConfig(slapd));
    const right = await p.login('dave', 'dave-pass');
    assert.equal(right.refusal?.reason, 'password_expired');
    assert.match(right.refusal?.advice ?? '', /password has expired/);
    assert.deepEqual((await p.login('dave', 'not-daves-password')).refusal, { reason: 'wrong_password', account: 'dave' });
  });

  test('a locked account: the control says so for any password, so the reason is never told; lookup() refuses', async () => {
    const p = provider(ldapConfig(slapd));
    for (let i = 0; i < 5; i++) assert.equal((await p.login('carol', 'not-carols-password')).refusal?.reason, 'wrong_password');
    for (const password of ['carol-pass', 'not-carols-password']) {
      assert.deepEqual((await p.login('carol', password)).refusal, { reason: 'locked', account: 'carol' });
    }
    assert.equal(await p.lookup('carol'), undefined);
    // Locked by an administrator for good: "disabled" to lookup().
    await slapd.modify(`dn: ${userDn(slapd, 'carol')}\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n`);
    assert.equal(await p.lookup('carol'), undefined);
  });
});

describe('LDAP identity provider against OpenLDAP (dynlist)', () => {
  let slapd: RunningSlapd;
  before(async () => {
    slapd = await startSlapd({ memberOf: 'dynlist' });
  });
  after(async () => {
    await slapd?.stop();
  });

  test('memberOf computed by dynlist (nested included) and the group search agree', async () => {
    const viaMemberOf = provider(ldapConfig(slapd, { groups: { source: 'memberOf' } }));
    assert.deepEqual(groupNames(await viaMemberOf.authenticate('alice', 'alice-pass')), ['developers', 'platform']);
    const viaSearch = provider(ldapConfig(slapd));
    assert.deepEqual(groupNames(await viaSearch.authenticate('alice', 'alice-pass')), ['developers', 'docker', 'platform']);
  });
});

describe('LDAP directory failures', () => {
  let slapd: RunningSlapd;
  before(async () => {
    slapd = await startSlapd({ idleTimeoutSeconds: 1 });
  });
  after(async () => {
    await slapd?.stop();
  });

  test('a pooled connection the server closed (idle timeout) is discarded and re-opened', async () => {
    const p = provider(ldapConfig(slapd, { poolSize: 1 }));
    assert.deepEqual(await countBinds(() => p.lookup('alice')), [slapd.bindDn]);
    assert.deepEqual(await countBinds(() => p.lookup('alice')), [], 'the pooled connection is reused');
    await idleConnectionsClosed(slapd);
    const binds = await countBinds(async () => {
      assert.deepEqual(groupNames(await p.lookup('alice')), ['developers', 'docker', 'platform']);
    });
    assert.deepEqual(binds, [slapd.bindDn], 'a fresh service connection replaced the closed one');
  });

  test('a frozen directory (SIGSTOP) is BackendUnavailableError within the timeout', async () => {
    const p = provider(ldapConfig(slapd, { timeoutSeconds: 1 }));
    assert.ok(await p.lookup('alice')); // warm pool: the search on the pooled connection times out
    process.kill(slapd.pid, 'SIGSTOP');
    try {
      // The signal is queued, not yet acted on: a busy slapd thread could answer one more request.
      await stopped(slapd.pid);
      for (const attempt of [() => p.lookup('alice'), () => p.authenticate('bob', 'bob-pass')]) {
        const started = Date.now();
        await assert.rejects(attempt(), (err) => assertUnavailable(err, /timed out/i));
        const took = Date.now() - started;
        assert.ok(took >= 900 && took < 1800, `took ${took} ms with a 1 s timeout`);
      }
    } finally {
      process.kill(slapd.pid, 'SIGCONT');
    }
    assert.ok(await p.lookup('alice'), 'recovers once the directory answers again');
  });

  test('a stopped directory is BackendUnavailableError, fast', async () => {
    const warm = provider(ldapConfig(slapd, { timeoutSeconds: 5 }));
    const cold = provider(ldapConfig(slapd, { timeoutSeconds: 5 })); // made first: stop() removes the CA file
    assert.ok(await warm.lookup('alice'));
    await slapd.stop();
    for (const attempt of [() => warm.authenticate('alice', 'alice-pass'), () => warm.lookup('bob'), () => cold.authenticate('alice', 'alice-pass')]) {
      const started = Date.now();
      await assert.rejects(attempt(), (err) => assertUnavailable(err));
      assert.ok(Date.now() - started < 1000, 'refused connections fail at once, not after the timeout');
    }
  });
});
