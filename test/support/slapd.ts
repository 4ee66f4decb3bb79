// A throwaway OpenLDAP slapd for tests: its own cn=config (loaded offline with slapadd -n0) in a
// temp dir, an mdb database, the memberof overlay (or dynlist), TLS with a self-signed cert for
// ldaps:// and StartTLS, and a small seeded directory. Nothing under /etc/ldap is touched and no
// system service is started, so it runs on a CI machine next to anything else.
//
// Seed (every password is stored as an {SSHA} hash):
//   cn=admin,dc=example,dc=org                       admin-secret (rootDN, used by modify())
//   cn=registry-svc,ou=services,dc=example,dc=org    svc-secret   (service account, read-only)
//   uid=alice|bob|carol|dave,ou=people,...           <uid>-pass   (inetOrgPerson)
//   groupOfNames developers{alice,bob} security{bob,carol} admins{carol}
//                platform{cn=developers group}  <- nested: alice and bob are indirect members
//   posixGroup   docker (gidNumber 5000) memberUid alice, dave
// With `ppolicy: true`, slapo-ppolicy enforces cn=default,ou=policies (lockout after 5 failures,
// reported to clients; pwdChangedTime kept; an administrator's reset sets pwdReset) and
// cn=short,ou=policies (passwords expire after 2 s, no grace logins) is there to be assigned.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'ldapts';
import { ensureCommands } from './packages.js';
import { run } from './run.js';
import { freePort } from './server.js';

export interface SlapdOptions {
  /**
   * overlay (default): slapo-memberof + slapo-refint, memberOf is stored, direct groups only.
   * dynlist: memberOf is computed at search time by slapo-dynlist, nested groups included.
   */
  memberOf?: 'overlay' | 'dynlist';
  /** olcIdleTimeout: slapd closes client connections idle for this long (tests pool recovery). */
  idleTimeoutSeconds?: number;
  /** Load slapo-ppolicy with the policies described at the top. */
  ppolicy?: boolean;
}

export interface RunningSlapd {
  /** ldap:// (plain, StartTLS available) */
  url: string;
  ldapsUrl: string;
  /** PEM file that signs the server certificate (CN=localhost, SAN localhost and 127.0.0.1). */
  caFile: string;
  baseDn: string;
  /** The read-only service account. */
  bindDn: string;
  bindPassword: string;
  adminDn: string;
  adminPassword: string;
  /** slapd's process id, e.g. to SIGSTOP it and test timeouts. */
  pid: number;
  dir: string;
  /** Applies LDIF (changetype add/modify/delete records) as the rootDN, through LDAP so the overlays see it. */
  modify(ldif: string): Promise<void>;
  /** Kills slapd and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

const BASE_DN = 'dc=example,dc=org';
const ADMIN_DN = `cn=admin,${BASE_DN}`;
const ADMIN_PASSWORD = 'admin-secret';
const SERVICE_DN = `cn=registry-svc,ou=services,${BASE_DN}`;
const SERVICE_PASSWORD = 'svc-secret';
const START_ATTEMPTS = 3;
const READY_TIMEOUT_MS = 10_000;

// slapd instances left behind by a failing test file are killed (and their dirs removed) on exit.
const live = new Map<ChildProcess, string>();
process.once('exit', () => {
  for (const [child, dir] of live) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

let commands: Promise<Record<string, string>> | undefined;
function slapdCommands(): Promise<Record<string, string>> {
  commands ??= ensureCommands({ slapd: 'slapd', slapadd: 'slapd', ldapmodify: 'ldap-utils', openssl: 'openssl' });
  return commands;
}

/** {SSHA} as slappasswd makes it: base64(sha1(password + salt) + salt). Saves a process per password. */
/**
 * The settings that point a Portcullis at this directory (service account, people and groups), as
 * environment variables for startPortcullis; `overrides` adds or replaces some.
 */
export function portcullisLdapEnv(slapd: RunningSlapd, overrides: Record<string, string> = {}): Record<string, string> {
  return {
    PORTCULLIS_AUTH_LDAP_URL: slapd.url,
    PORTCULLIS_AUTH_LDAP_BIND_DN: slapd.bindDn,
    PORTCULLIS_AUTH_LDAP_BIND_PASSWORD: slapd.bindPassword,
    PORTCULLIS_AUTH_LDAP_USER_BASE_DN: `ou=people,${slapd.baseDn}`,
    PORTCULLIS_AUTH_LDAP_GROUPS_BASE_DN: `ou=groups,${slapd.baseDn}`,
    ...overrides,
  };
}

export function ssha(password: string): string {
  const salt = randomBytes(8);
  const digest = createHash('sha1').update(password).update(salt).digest();
  return `{SSHA}${Buffer.concat([digest, salt]).toString('base64')}`;
}

/** A self-signed certificate for localhost/127.0.0.1 (EC P-256: much faster to make than RSA). */
export async function makeSelfSignedCert(dir: string, name = 'server'): Promise<{ certFile: string; keyFile: string }> {
  const { openssl = 'openssl' } = await slapdCommands();
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await run(openssl, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '3650',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', keyFile, '-out', certFile,
  ]);
  return { certFile, keyFile };
}

interface Layout {
  dir: string;
  certFile: string;
  keyFile: string;
  memberOf: 'overlay' | 'dynlist';
  idleTimeoutSeconds: number;
  ppolicy: boolean;
}

function globalConfig(l: Layout): string {
  return `dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: ${l.dir}/slapd.pid
olcArgsFile: ${l.dir}/slapd.args
olcLogLevel: none
olcIdleTimeout: ${l.idleTimeoutSeconds}
olcTLSCertificateFile: ${l.certFile}
olcTLSCertificateKeyFile: ${l.keyFile}
olcTLSCACertificateFile: ${l.certFile}

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: refint
olcModuleLoad: dynlist
${l.ppolicy ? 'olcModuleLoad: ppolicy\n' : ''}
dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

`;
}

function schemaIncludes(l: Layout): string {
  const schemas = ['core', 'cosine', 'nis', 'inetorgperson', ...(l.memberOf === 'dynlist' ? ['dyngroup'] : [])];
  return schemas.map((s) => `include: file:///etc/ldap/schema/${s}.ldif\n\n`).join('');
}

function databaseConfig(l: Layout): string {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return `dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcPasswordHash: {SSHA}
olcSizeLimit: 500

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by dn.exact=gidNumber=${gid}+uidNumber=${uid},cn=peercred,cn=external,cn=auth manage by * break

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: ${BASE_DN}
olcRootDN: ${ADMIN_DN}
olcRootPW: ${ssha(ADMIN_PASSWORD)}
olcDbDirectory: ${l.dir}/data
olcDbMaxSize: 1073741824
olcDbIndex: objectClass eq
olcDbIndex: uid,cn,mail eq
olcDbIndex: member,memberUid eq
olcAccess: {0}to attrs=userPassword by self =xw by anonymous auth by * none
olcAccess: {1}to * by users read by * none

`;
}

function overlayConfig(l: Layout): string {
  const memberOf =
    l.memberOf === 'overlay'
      ? `dn: olcOverlay={0}memberof,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {0}memberof
olcMemberOfRefInt: TRUE
olcMemberOfDangling: ignore
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf
`
      : `dn: olcOverlay={0}dynlist,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcDynListConfig
olcOverlay: {0}dynlist
olcDynListAttrSet: {0}groupOfURLs memberURL member+memberOf@groupOfNames*
`;
  return `${memberOf}
dn: olcOverlay={1}refint,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {1}refint
olcRefintAttribute: member
olcRefintAttribute: owner
olcRefintNothing: ${ADMIN_DN}
${l.ppolicy ? ppolicyOverlay() : ''}`;
}

function ppolicyOverlay(): string {
  return `
dn: olcOverlay={2}ppolicy,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {2}ppolicy
olcPPolicyDefault: cn=default,ou=policies,${BASE_DN}
olcPPolicyUseLockout: TRUE
`;
}

function policiesLdif(): string {
  return `dn: ou=policies,${BASE_DN}
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,${BASE_DN}
objectClass: device
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdMaxAge: 31536000
pwdLockout: TRUE
pwdMaxFailure: 5
pwdLockoutDuration: 600
pwdFailureCountInterval: 600
pwdMustChange: TRUE

dn: cn=short,ou=policies,${BASE_DN}
objectClass: device
objectClass: pwdPolicy
cn: short
pwdAttribute: userPassword
pwdMaxAge: 2
pwdGraceAuthNLimit: 0
`;
}

function seedLdif(ppolicy: boolean): string {
  const people = [
    ['alice', 'Alice', 'Liddell'],
    ['bob', 'Bob', 'Builder'],
    ['carol', 'Carol', 'Danvers'],
    ['dave', 'Dave', 'Lister'],
  ].map(
    ([uid, given, sn], i) => `dn: uid=${uid},ou=people,${BASE_DN}
objectClass: inetOrgPerson
uid: ${uid}
cn: ${given} ${sn}
givenName: ${given}
sn: ${sn}
mail: ${uid}@example.org
employeeNumber: ${1001 + i}
userPassword: ${ssha(`${uid ?? ''}-pass`)}
`,
  );
  const group = (cn: string, members: string[]): string =>
    `dn: cn=${cn},ou=groups,${BASE_DN}\nobjectClass: groupOfNames\ncn: ${cn}\n${members.map((m) => `member: ${m}\n`).join('')}`;
  const user = (uid: string): string => `uid=${uid},ou=people,${BASE_DN}`;
  return [
    `dn: ${BASE_DN}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\no: Example Org\ndc: example\n`,
    ...(ppolicy ? [policiesLdif()] : []),
    ...['people', 'groups', 'services'].map((ou) => `dn: ou=${ou},${BASE_DN}\nobjectClass: organizationalUnit\nou: ${ou}\n`),
    `dn: ${SERVICE_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: registry-svc
description: service account used by the registry to look users up
userPassword: ${ssha(SERVICE_PASSWORD)}
`,
    ...people,
    group('developers', [user('alice'), user('bob')]),
    group('security', [user('bob'), user('carol')]),
    group('admins', [user('carol')]),
    group('platform', [`cn=developers,ou=groups,${BASE_DN}`]),
    `dn: cn=docker,ou=groups,${BASE_DN}\nobjectClass: posixGroup\ncn: docker\ngidNumber: 5000\nmemberUid: alice\nmemberUid: dave\n`,
  ].join('\n');
}

/** Keeps the last few KB of slapd's stderr for error messages. */
function captureTail(child: ChildProcess): () => string {
  let tail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-4000);
  });
  return () => tail;
}

/** Resolves once slapd answers a rootDSE search; rejects if it exits first or takes too long. */
async function waitReady(url: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`slapd exited (${child.exitCode ?? child.signalCode}) during start:\n${stderr()}`);
    }
    const client = new Client({ url, connectTimeout: 500, timeout: 500 });
    try {
      await client.search('', { scope: 'base', attributes: ['namingContexts'] });
      return;
    } catch {
      await sleep(30);
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }
  throw new Error(`slapd did not answer on ${url} within ${READY_TIMEOUT_MS} ms:\n${stderr()}`);
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGCONT'); // a test may have frozen it with SIGSTOP; SIGTERM would wait forever
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

async function writeConfig(layout: Layout, slapadd: string): Promise<void> {
  const config = globalConfig(layout) + schemaIncludes(layout) + databaseConfig(layout) + overlayConfig(layout);
  await writeFile(join(layout.dir, 'config.ldif'), config);
  await run(slapadd, ['-n0', '-F', join(layout.dir, 'slapd.d'), '-l', join(layout.dir, 'config.ldif')]);
}

/** Starts slapd in the foreground (`-d 0`: no fork, so this process owns it and can kill it). */
async function launch(dir: string, slapd: string): Promise<{ child: ChildProcess; port: number; tlsPort: number; stderr: () => string }> {
  let lastError: unknown;
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    // freePort() closes its probe socket before slapd binds, so another process may take the port: retry.
    const [port, tlsPort] = [await freePort(), await freePort()];
    const urls = `ldap://127.0.0.1:${port}/ ldaps://127.0.0.1:${tlsPort}/`;
    const child = spawn(slapd, ['-F', join(dir, 'slapd.d'), '-h', urls, '-d', '0'], { stdio: ['ignore', 'ignore', 'pipe'] });
    live.set(child, dir);
    const stderr = captureTail(child);
    try {
      await waitReady(`ldap://127.0.0.1:${port}`, child, stderr);
      return { child, port, tlsPort, stderr };
    } catch (err) {
      lastError = err;
      await stopChild(child);
      live.delete(child);
    }
  }
  throw lastError;
}

export async function startSlapd(options: SlapdOptions = {}): Promise<RunningSlapd> {
  const cmds = await slapdCommands();
  const { slapd = 'slapd', slapadd = 'slapadd', ldapmodify = 'ldapmodify' } = cmds;
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-slapd-'));
  let stopped = false;
  let child: ChildProcess | undefined;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child) {
      await stopChild(child);
      live.delete(child);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await chmod(dir, 0o700);
    await Promise.all(['slapd.d', 'data'].map((d) => mkdir(join(dir, d))));
    const { certFile, keyFile } = await makeSelfSignedCert(dir);
    const layout: Layout = {
      dir,
      certFile,
      keyFile,
      memberOf: options.memberOf ?? 'overlay',
      idleTimeoutSeconds: options.idleTimeoutSeconds ?? 0,
      ppolicy: options.ppolicy ?? false,
    };
    await writeConfig(layout, slapadd);
    const launched = await launch(dir, slapd);
    child = launched.child;
    const url = `ldap://127.0.0.1:${launched.port}`;
    // ldapmodify reads the admin password from a file (-y) so it never shows up in `ps`.
    const passwordFile = join(dir, 'admin.pw');
    await writeFile(passwordFile, ADMIN_PASSWORD, { mode: 0o600 });
    let edits = 0;
    const modify = async (ldif: string, add = false): Promise<void> => {
      const file = join(dir, `edit-${++edits}.ldif`);
      await writeFile(file, ldif);
      await run(ldapmodify, ['-x', '-H', url, '-D', ADMIN_DN, '-y', passwordFile, ...(add ? ['-a'] : []), '-f', file], { timeoutMs: 20_000 });
    };
    // Seeded through LDAP rather than slapadd, so the memberof/refint overlays see the writes.
    await modify(seedLdif(layout.ppolicy), true);
    return {
      url,
      ldapsUrl: `ldaps://127.0.0.1:${launched.tlsPort}`,
      caFile: certFile,
      baseDn: BASE_DN,
      bindDn: SERVICE_DN,
      bindPassword: SERVICE_PASSWORD,
      adminDn: ADMIN_DN,
      adminPassword: ADMIN_PASSWORD,
      pid: child.pid ?? 0,
      dir,
      modify: (ldif: string) => modify(ldif),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
