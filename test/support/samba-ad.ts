// A throwaway Active Directory domain controller for tests: Samba's AD DC provisioned in a temp
// dir (`samba-tool domain provision --targetdir`, nothing under /etc touched, no system service),
// running only its LDAP server, on a loopback address of its own (127.x.y.z, so several can run on
// one machine and nothing else's ports are taken), with a certificate from a CA of its own for
// ldaps:// and StartTLS. Samba refuses simple binds without TLS, as a hardened AD does.
//
// Start once per test file (provisioning takes ~10 s). Seed (realm CORP.EXAMPLE.ORG, NetBIOS CORP,
// base DC=corp,DC=example,DC=org, everyone in CN=Users; passwords `<Name>-Pass-2026!`):
//   registry-svc (Svc-Pass-2026!): the service account
//   alice, bob, carol, dave, erin, frank, gina, henry, ivan  (userPrincipalName <name>@corp.example.org)
//   groups developers{alice, dave, erin, platform-team}  platform-team{bob}  <- bob is a nested member
//          registry-admins{carol};  everyone's primary group is Domain Users (primaryGroupID 513)
//   dave is disabled (bind: data 533), erin must change her password (773), frank's account has
//   expired (701); the domain locks an account after 5 bad passwords (775) for 10 minutes.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Attribute, Change, Client } from 'ldapts';
import { ensureCommands } from './packages.js';
import { run } from './run.js';

export const AD_REALM = 'CORP.EXAMPLE.ORG';
export const AD_DOMAIN = 'CORP';
export const AD_UPN_SUFFIX = 'corp.example.org';
export const AD_BASE_DN = 'DC=corp,DC=example,DC=org';
export const AD_USERS_DN = `CN=Users,${AD_BASE_DN}`;
export const AD_LOCKOUT_THRESHOLD = 5;
const ADMIN_PASSWORD = 'Adm1n-Pass-2026!';
const SERVICE_PASSWORD = 'Svc-Pass-2026!';
const USERS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'henry', 'ivan'] as const;
export type AdUser = (typeof USERS)[number];
const READY_TIMEOUT_MS = 60_000;
const PROVISION_TIMEOUT_MS = 180_000;
const START_ATTEMPTS = 3;

export interface RunningSambaAd {
  /** The loopback address it listens on, e.g. 127.93.4.17 (port 389 with StartTLS, 636 for ldaps). */
  host: string;
  ldapsUrl: string;
  /** ldap:// — usable only with StartTLS. */
  ldapUrl: string;
  /** The CA that issued the server certificate (SAN: dc1.corp.example.org, localhost, the address). */
  caFile: string;
  baseDn: string;
  usersDn: string;
  bindDn: string;
  bindPassword: string;
  dir: string;
  /** The seeded password of a user. */
  password(user: AdUser): string;
  userDn(name: string): string;
  /** LDAP modifications as the domain Administrator (over ldaps). */
  modify(dn: string, changes: Change[]): Promise<void>;
  /** Resets a user's password as the Administrator (pwdLastSet becomes now). */
  setPassword(user: string, password: string): Promise<void>;
  /** Sets or clears ACCOUNTDISABLE in userAccountControl. */
  setDisabled(user: string, disabled: boolean): Promise<void>;
  /** Binds as `dn` with `password` directly (not through the registry); resolves the error message or 'ok'. */
  tryBind(dn: string, password: string): Promise<string>;
  /** Reads attributes of an entry as the Administrator. */
  read(dn: string, attributes: string[]): Promise<Record<string, string[]>>;
  /** Stops Samba and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

// Instances left behind by a failing test file are killed (and their dirs removed) on exit.
const live = new Map<ChildProcess, string>();
process.once('exit', () => {
  for (const [child, dir] of live) {
    killGroup(child, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

let commands: Promise<Record<string, string>> | undefined;
function sambaCommands(): Promise<Record<string, string>> {
  commands ??= ensureCommands({ samba: 'samba', 'samba-tool': 'samba', ldbadd: 'ldb-tools', ldbmodify: 'ldb-tools', openssl: 'openssl' });
  return commands;
}

export const passwordOf = (user: string): string => `${user.charAt(0).toUpperCase()}${user.slice(1)}-Pass-2026!`;
const userDn = (name: string): string => `CN=${name},${AD_USERS_DN}`;
/** unicodePwd takes the password in double quotes, UTF-16LE. */
const unicodePwd = (password: string): Buffer => Buffer.from(`"${password}"`, 'utf16le');

/** A loopback address nobody listens on at 636 (Linux answers on all of 127/8). */
async function freeLoopbackAddress(): Promise<string> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const host = `127.${randomInt(100, 200)}.${randomInt(1, 255)}.${randomInt(2, 255)}`;
    const free = await new Promise<boolean>((resolve) => {
      const probe = createServer();
      probe.once('error', () => resolve(false));
      probe.listen(636, host, () => probe.close(() => resolve(true)));
    });
    if (free) return host;
  }
  throw new Error('no free loopback address for Samba');
}

/** A CA and a server certificate for the DC's names and address (EC P-256: quick to make). */
async function makeCertificates(dir: string, host: string, openssl: string): Promise<{ ca: string; cert: string; key: string }> {
  const tls = join(dir, 'tls');
  await mkdir(tls);
  const [ca, caKey, cert, key, csr, ext] = ['ca.pem', 'ca.key', 'cert.pem', 'key.pem', 'req.csr', 'ext.cnf'].map((f) => join(tls, f)) as [
    string, string, string, string, string, string,
  ];
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run(openssl, ['req', '-x509', ...ec, '-days', '3650', '-subj', '/CN=Test AD CA', '-keyout', caKey, '-out', ca]);
  await run(openssl, ['req', ...ec, '-subj', '/CN=dc1.corp.example.org', '-keyout', key, '-out', csr]);
  await writeFile(ext, `subjectAltName=DNS:dc1.corp.example.org,DNS:localhost,IP:${host}\nextendedKeyUsage=serverAuth\n`);
  await run(openssl, ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-days', '3650', '-extfile', ext, '-out', cert]);
  await chmod(key, 0o600);
  return { ca, cert, key };
}

function seedUsers(): string {
  const entries = [['registry-svc', SERVICE_PASSWORD] as const, ...USERS.map((u) => [u, passwordOf(u)] as const)].map(
    ([name, password]) => `dn: ${userDn(name)}
objectClass: user
sAMAccountName: ${name}
userPrincipalName: ${name}@${AD_UPN_SUFFIX}
unicodePwd:: ${unicodePwd(password).toString('base64')}
userAccountControl: 512
`,
  );
  const groups = ['developers', 'platform-team', 'registry-admins'].map(
    (g) => `dn: CN=${g},${AD_USERS_DN}\nobjectClass: group\nsAMAccountName: ${g}\n`,
  );
  return [...entries, ...groups].join('\n');
}

function seedChanges(): string {
  const members = (group: string, names: string[]): string =>
    `dn: CN=${group},${AD_USERS_DN}\nchangetype: modify\nadd: member\n${names.map((n) => `member: ${userDn(n)}\n`).join('')}`;
  // A lockout duration and observation window are negative FILETIME intervals (100 ns units).
  const tenMinutes = -10n * 60n * 10_000_000n;
  return [
    members('developers', ['alice', 'dave', 'erin', 'platform-team']),
    members('platform-team', ['bob']),
    members('registry-admins', ['carol']),
    `dn: ${userDn('dave')}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n`,
    `dn: ${userDn('erin')}\nchangetype: modify\nreplace: pwdLastSet\npwdLastSet: 0\n`,
    // 1970-01-01: long expired.
    `dn: ${userDn('frank')}\nchangetype: modify\nreplace: accountExpires\naccountExpires: 116444736000000000\n`,
    `dn: ${AD_BASE_DN}
changetype: modify
replace: lockoutThreshold
lockoutThreshold: ${AD_LOCKOUT_THRESHOLD}
-
replace: lockoutDuration
lockoutDuration: ${tenMinutes}
-
replace: lockOutObservationWindow
lockOutObservationWindow: ${tenMinutes}
`,
  ].join('\n');
}

async function provision(dir: string, host: string, cmds: Record<string, string>): Promise<void> {
  const { cert, key, ca } = await makeCertificates(dir, host, cmds.openssl ?? 'openssl');
  const options = {
    interfaces: `${host}/8`,
    'bind interfaces only': 'yes',
    'tls enabled': 'yes',
    'tls keyfile': key,
    'tls certfile': cert,
    'tls cafile': ca,
    // The LDAP server is all the tests need: no smbd, kdc, dns, rpc (quicker, and fewer ports).
    'server services': 'ldap',
    'log file': join(dir, 'log.%m'),
  };
  await run(
    cmds['samba-tool'] ?? 'samba-tool',
    [
      'domain', 'provision', `--realm=${AD_REALM}`, `--domain=${AD_DOMAIN}`, '--server-role=dc', '--dns-backend=NONE',
      `--adminpass=${ADMIN_PASSWORD}`, '--host-name=dc1', `--targetdir=${dir}`,
      ...Object.entries(options).map(([name, value]) => `--option=${name}=${value}`),
    ],
    { timeoutMs: PROVISION_TIMEOUT_MS },
  );
  // Seeded straight into the database before Samba starts: one ldbadd instead of a samba-tool per user.
  const sam = join(dir, 'private', 'sam.ldb');
  await writeFile(join(dir, 'seed-add.ldif'), seedUsers());
  await writeFile(join(dir, 'seed-modify.ldif'), seedChanges());
  await run(cmds.ldbadd ?? 'ldbadd', ['-H', sam, join(dir, 'seed-add.ldif')]);
  await run(cmds.ldbmodify ?? 'ldbmodify', ['-H', sam, join(dir, 'seed-modify.ldif')]);
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal); // samba forks its services: the whole group it leads
  } catch {
    child.kill(signal);
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  killGroup(child, 'SIGTERM');
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
  await groupGone(child.pid);
}

/** Kills what is left of samba's process group and waits until none of it runs (it writes into its dir until then). */
async function groupGone(pid: number | undefined): Promise<void> {
  if (pid === undefined) return;
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      return; // ESRCH: no process of the group is left
    }
    if (Date.now() > deadline) return;
    await sleep(50);
  }
}

function captureTail(child: ChildProcess): () => string {
  let tail = '';
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return () => tail;
}

async function adminClient(url: string, caFile: string): Promise<Client> {
  const client = new Client({ url, timeout: 5000, connectTimeout: 5000, tlsOptions: { ca: await readFile(caFile), minVersion: 'TLSv1.2' } });
  await client.bind(`Administrator@${AD_UPN_SUFFIX}`, ADMIN_PASSWORD);
  return client;
}

async function waitReady(url: string, caFile: string, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`samba exited during start:\n${output()}`);
    try {
      const client = await adminClient(url, caFile);
      await client.unbind();
      return;
    } catch {
      await sleep(200);
    }
  }
  throw new Error(`samba did not answer on ${url} within ${READY_TIMEOUT_MS} ms:\n${output()}`);
}

async function launch(dir: string, host: string, samba: string, caFile: string): Promise<ChildProcess> {
  const child = spawn(samba, ['-F', '-s', join(dir, 'etc', 'smb.conf'), '--debug-stdout'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  live.set(child, dir);
  const output = captureTail(child);
  try {
    await waitReady(`ldaps://${host}:636`, caFile, child, output);
    return child;
  } catch (err) {
    await stopChild(child);
    live.delete(child);
    throw err;
  }
}

export async function startSambaAd(): Promise<RunningSambaAd> {
  if (process.getuid?.() !== 0) {
    throw new Error("the Active Directory tests need root: Samba's LDAP server only listens on ports 389 and 636");
  }
  const cmds = await sambaCommands();
  let lastError: unknown;
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-samba-ad-'));
    try {
      await chmod(dir, 0o700);
      // Another process may take the address between the probe and Samba's bind: then try another.
      const host = await freeLoopbackAddress();
      await provision(dir, host, cmds);
      const caFile = join(dir, 'tls', 'ca.pem');
      const child = await launch(dir, host, cmds.samba ?? 'samba', caFile);
      return running(dir, host, caFile, child);
    } catch (err) {
      lastError = err;
      await rm(dir, { recursive: true, force: true });
    }
  }
  throw lastError;
}

function running(dir: string, host: string, caFile: string, child: ChildProcess): RunningSambaAd {
  const ldapsUrl = `ldaps://${host}:636`;
  let stopped = false;
  const asAdmin = async <T>(work: (client: Client) => Promise<T>): Promise<T> => {
    const client = await adminClient(ldapsUrl, caFile);
    try {
      return await work(client);
    } finally {
      await client.unbind().catch(() => undefined);
    }
  };
  const modify = (dn: string, changes: Change[]): Promise<void> => asAdmin((c) => c.modify(dn, changes));
  const replace = (type: string, values: string[] | Buffer[]): Change =>
    new Change({ operation: 'replace', modification: new Attribute({ type, values }) });
  return {
    host,
    ldapsUrl,
    ldapUrl: `ldap://${host}:389`,
    caFile,
    baseDn: AD_BASE_DN,
    usersDn: AD_USERS_DN,
    bindDn: userDn('registry-svc'),
    bindPassword: SERVICE_PASSWORD,
    dir,
    password: passwordOf,
    userDn,
    modify,
    setPassword: (user, password) => modify(userDn(user), [replace('unicodePwd', [unicodePwd(password)])]),
    setDisabled: async (user, disabled) => {
      const current = await asAdmin((c) => c.search(userDn(user), { scope: 'base', attributes: ['userAccountControl'] }));
      const flags = Number(current.searchEntries[0]?.userAccountControl ?? 512);
      await modify(userDn(user), [replace('userAccountControl', [String(disabled ? flags | 2 : flags & ~2)])]);
    },
    tryBind: async (dn, password) => {
      const client = new Client({ url: ldapsUrl, timeout: 5000, connectTimeout: 5000, tlsOptions: { ca: await readFile(caFile) } });
      try {
        await client.bind(dn, password);
        return 'ok';
      } catch (err) {
        return err instanceof Error ? err.message : String(err);
      } finally {
        await client.unbind().catch(() => undefined);
      }
    },
    read: (dn, attributes) =>
      asAdmin(async (c) => {
        const entry = (await c.search(dn, { scope: 'base', attributes })).searchEntries[0];
        const out: Record<string, string[]> = {};
        for (const [key, value] of Object.entries(entry ?? {})) {
          if (key === 'dn') continue;
          out[key] = (Array.isArray(value) ? value : [value]).map((v) => (Buffer.isBuffer(v) ? v.toString('hex') : v));
        }
        return out;
      }),
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopChild(child);
      live.delete(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
