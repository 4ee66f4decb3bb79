// End-to-end: directory users log in to the registry with real clients. One OpenLDAP (StartTLS
// with its own CA, groups found by search, group cache TTL 2 s) and one Portcullis configured for
// it; access rules on directory groups (by cn and by DN), a robot account and an admin group.
// Every client under test keeps its credentials in its own auth file / DOCKER_CONFIG, never in
// the administrator's one that E2E logs in with (that one only checks what the registry holds).
//
//   alice  developers (pull,push team-a/**)     -> skopeo login + copy, docker login + push
//   bob    developers, security                 -> podman login + pull
//   carol  security (pull team-a/**), admins    -> administrator through auth.adminGroups
//   dave   no group with a rule                 -> podman login works, pull and push are denied
//   robot$ci  (pull,push team-a/ci/**)          -> skopeo --dest-creds
// Then alice leaves developers and dave joins security in the directory: once the group cache
// TTL has passed, alice can no longer push and dave can pull (through the DN-form rule).
//
// Failed logins: Portcullis throttles them per user AND per client address after 5 free ones,
// and every client here comes from 127.0.0.1, so this file keeps to 4 (docker's wrong password,
// the empty password, two filter-syntax usernames); more would turn later logins into 429s.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  DOCKER_MANIFEST_V2,
  digestsOf,
  inspectRaw,
  listTags,
  readOciLayoutManifest,
  skopeo,
  skopeoCopy,
} from '../support/clients.js';
import { startDockerd, type RunningDockerd } from '../support/dockerd.js';
import { E2E, E2E_TEST_TIMEOUT_MS, registryKind } from '../support/e2e.js';
import { assertRegistryServes } from '../support/image-checks.js';
import { createOciLayout, type OciLayout } from '../support/oci-layout.js';
import { isolatedPodman, type Podman } from '../support/podman.js';
import { TestRegistry } from '../support/registry-client.js';
import { CommandError, type RunOptions, type RunResult } from '../support/run.js';
import { startSlapd, type RunningSlapd } from '../support/slapd.js';

const REPO = 'team-a/app';
const CI_REPO = 'team-a/ci/app';
const OTHER_REPO = 'team-a/other';
const ADMIN_ONLY_REPO = 'carol-admin/app';
const GROUP_TTL_SECONDS = 2;
const SECURITY_DN = 'cn=security,ou=groups,dc=example,dc=org';
const ROBOT_NAME = 'ci';

/** What a registry says when it refuses: skopeo, podman and docker word it differently. */
const DENIED = /unauthorized|denied|authentication required|insufficient_scope|requested access to the resource/i;
/** What `skopeo login` / `docker login` say for wrong credentials. */
const LOGIN_REFUSED = /invalid username\/password|unauthorized|invalid username or password/i;

const password = (uid: string) => `${uid}-pass`;
const userDn = (slapd: RunningSlapd, uid: string) => `uid=${uid},ou=people,${slapd.baseDn}`;
const groupDn = (slapd: RunningSlapd, cn: string) => `cn=${cn},ou=groups,${slapd.baseDn}`;

/** The error of a client command that must fail; fails the test when it succeeds. */
async function failure(work: Promise<RunResult>, what: string): Promise<CommandError> {
  const outcome = await work.then(
    (result) => result,
    (err: unknown) => err,
  );
  if (outcome instanceof CommandError) return outcome;
  if (outcome instanceof Error) throw outcome;
  assert.fail(`${what} succeeded but must fail:\n${JSON.stringify(outcome)}`);
}

/** A client command that must be refused by the registry (not crash, not time out). */
async function assertDenied(work: Promise<RunResult>, what: string): Promise<CommandError> {
  const err = await failure(work, what);
  assert.equal(err.timedOut, false, `${what} timed out instead of being denied`);
  assert.match(`${err.stderr}\n${err.stdout}`, DENIED, `${what} failed, but not with an access error`);
  return err;
}

interface RequestLine {
  method: string;
  path: string;
  status: number;
}

/**
 * The request lines Portcullis logged from `offset` in its output on. It logs a request after
 * answering it, and the line reaches us through a pipe: hence the short wait.
 */
async function requestsSince(e2e: E2E, offset: number): Promise<RequestLine[]> {
  await sleep(200);
  return e2e.registry
    .output()
    .slice(offset)
    .split('\n')
    .flatMap((line) => {
      if (!line.startsWith('{')) return [];
      try {
        const parsed = JSON.parse(line) as Partial<RequestLine> & { msg?: string };
        return parsed.msg === 'request' && typeof parsed.status === 'number' && typeof parsed.path === 'string'
          ? [{ method: String(parsed.method), path: parsed.path, status: parsed.status }]
          : [];
      } catch {
        return [];
      }
    });
}

describe('LDAP users with real clients', { timeout: E2E_TEST_TIMEOUT_MS, skip: registryKind() === 'reference' && 'needs Portcullis auth' }, () => {
  const e2e = new E2E('ldap-auth', { skopeo: 'skopeo', podman: 'podman', dockerd: 'docker.io' });
  let slapd: RunningSlapd;
  let dockerd: RunningDockerd;
  let image: OciLayout;
  let robotSecret = '';
  const ref = (repository: string, tag = image.tag) => e2e.ref(repository, tag);
  /** Each user's own auth file for skopeo and podman (never the admin's REGISTRY_AUTH_FILE). */
  const authFile = (who: string) => join(e2e.tmp, `auth-${who}.json`);
  const as = (who: string): RunOptions => ({ env: { REGISTRY_AUTH_FILE: authFile(who) } });
  /** The image as docker loaded it from a docker-archive of the layout. */
  const dockerLocal = () => `local/ldap-source:${image.tag}`;
  const expected = () => ({ manifestDigest: image.manifestDigest, configDigest: image.configDigest, layerDigests: image.layerDigests });
  const podmans = new Map<string, Podman>();

  async function podmanFor(who: string): Promise<Podman> {
    const existing = podmans.get(who);
    if (existing) return existing;
    // Short: podman refuses a --runroot longer than 50 characters.
    const created = await isolatedPodman(await e2e.tempDir(`p-${who}`));
    podmans.set(who, created);
    return created;
  }
  const podman = async (who: string, args: string[]) => (await podmanFor(who)).run(args, as(who));

  function skopeoLogin(who: string, username = who, secret = password(who)): Promise<RunResult> {
    return skopeo(['login', '--tls-verify=false', '--authfile', authFile(who), '--username', username, '--password', secret, e2e.host], as(who));
  }

  async function adminApi(method: string, path: string, body?: unknown): Promise<unknown> {
    const token = await new TestRegistry(e2e.registry.url, e2e.registry.admin).token(['registry:admin:*']);
    const response = await fetch(new URL(path, e2e.registry.url), {
      method,
      headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
    return text === '' ? undefined : (JSON.parse(text) as unknown);
  }

  /** What the registry thinks `subject` may do on `repository` (admin API, groups read from the directory). */
  async function access(subject: string, repository: string) {
    return (await adminApi('GET', `/admin/v1/access?${new URLSearchParams({ subject, repository }).toString()}`)) as {
      admin: boolean;
      groups: { name: string; dn?: string }[];
      allowed: string[];
      rules: { subject: string; repositories: string; actions: string[] }[];
    };
  }

  before(async () => {
    slapd = await startSlapd();
    const directory = slapd;
    e2e.defer(() => directory.stop()); // registered first, so it stops after the registry
    // dockerd takes seconds to start: in parallel with the registry.
    const dockerdReady = startDockerd().then((started) => {
      dockerd = started;
      e2e.defer(() => e2e.saveLog('dockerd', started.output()));
      e2e.defer(() => started.stop());
    });
    // E2E.start() runs startPortcullis() without options, which passes process.env on; they are
    // removed again once it started (dockerd, starting meanwhile, may inherit these test values).
    const ldapEnv: Record<string, string> = {
      PORTCULLIS_AUTH_LDAP_URL: slapd.url,
      PORTCULLIS_AUTH_LDAP_START_TLS: 'true',
      PORTCULLIS_AUTH_LDAP_CA_FILE: slapd.caFile,
      PORTCULLIS_AUTH_LDAP_BIND_DN: slapd.bindDn,
      PORTCULLIS_AUTH_LDAP_BIND_PASSWORD: slapd.bindPassword,
      PORTCULLIS_AUTH_LDAP_USER_BASE_DN: `ou=people,${slapd.baseDn}`,
      PORTCULLIS_AUTH_LDAP_USER_FILTER: '(objectClass=inetOrgPerson)',
      PORTCULLIS_AUTH_LDAP_GROUPS_SOURCE: 'search',
      PORTCULLIS_AUTH_LDAP_GROUPS_BASE_DN: `ou=groups,${slapd.baseDn}`,
      PORTCULLIS_AUTH_LDAP_GROUPS_CACHE_TTL_SECONDS: String(GROUP_TTL_SECONDS),
      PORTCULLIS_AUTH_ADMIN_GROUPS: 'admins',
    };
    Object.assign(process.env, ldapEnv);
    const registryReady = e2e.start().finally(() => {
      for (const key of Object.keys(ldapEnv)) delete process.env[key];
    });
    const layoutReady = registryReady.then(async () => {
      image = await createOciLayout({ dir: await e2e.tempDir('source-layout'), layers: 3 });
    });
    // Wait for everything (so every started process has its clean-up registered), then fail.
    const settled = await Promise.allSettled([dockerdReady, registryReady, layoutReady]);
    for (const result of settled) if (result.status === 'rejected') throw result.reason;

    await adminApi('PUT', '/admin/v1/rules', {
      rules: [
        { subject: 'group:developers', repositories: 'team-a/**', actions: ['pull', 'push'] },
        { subject: `group:${SECURITY_DN}`, repositories: 'team-a/**', actions: ['pull'] },
      ],
    });
    const robot = (await adminApi('POST', '/admin/v1/robots', {
      name: ROBOT_NAME,
      rules: [{ repositories: 'team-a/ci/**', actions: ['pull', 'push'] }],
    })) as { username: string; secret: string };
    assert.equal(robot.username, `robot$${ROBOT_NAME}`);
    robotSecret = robot.secret;
  });
  after(() => e2e.stop());

  it(
    'alice (LDAP) logs in with skopeo and pushes a 3-layer OCI layout to team-a/app',
    e2e.step(async () => {
      const { stdout } = await skopeoLogin('alice');
      assert.match(stdout, /Login Succeeded/);
      const saved = await readFile(authFile('alice'), 'utf8');
      assert.ok(saved.includes(e2e.host), `alice's auth file has no entry for ${e2e.host}: ${saved}`);
      await skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker://${ref(REPO)}`, as('alice'));
      assert.deepEqual(digestsOf(await inspectRaw(ref(REPO), as('alice'))), expected());
      // The registry agrees on who she is: a directory user whose groups came from the search.
      const seen = await access('alice', REPO);
      assert.deepEqual(seen.groups.map((g) => g.name).sort(), ['developers', 'docker', 'platform']);
      assert.deepEqual(seen.allowed, ['pull', 'push']);
      assert.equal(seen.admin, false);
    }),
  );

  it(
    'bob (developers, security) logs in with podman and pulls team-a/app',
    e2e.step(async () => {
      const { stdout } = await podman('bob', ['login', '--tls-verify=false', '--authfile', authFile('bob'), '--username', 'bob', '--password', password('bob'), e2e.host]);
      assert.match(stdout, /Login Succeeded/);
      await podman('bob', ['pull', '--tls-verify=false', ref(REPO)]);
      const { stdout: id } = await podman('bob', ['image', 'inspect', '--format', '{{.Id}}', ref(REPO)]);
      assert.equal(`sha256:${id.trim()}`, image.configDigest);
    }),
  );

  it(
    'dave (in no group with a rule) logs in with podman, but may neither pull nor push team-a/app',
    e2e.step(async () => {
      const { stdout } = await podman('dave', ['login', '--tls-verify=false', '--authfile', authFile('dave'), '--username', 'dave', '--password', password('dave'), e2e.host]);
      assert.match(stdout, /Login Succeeded/);
      await assertDenied(podman('dave', ['pull', '--tls-verify=false', ref(REPO)]), 'podman pull as dave');
      // A push of his own copy of the image, loaded from the layout (no registry involved).
      const daves = await podmanFor('dave');
      const id = await daves.pullOciLayout(image.dir, image.tag);
      await daves.run(['tag', id, ref(REPO, 'dave')]);
      await assertDenied(podman('dave', ['push', '--tls-verify=false', ref(REPO, 'dave')]), 'podman push as dave');
      assert.ok(!(await listTags(`${e2e.host}/${REPO}`)).includes('dave'), 'dave\'s push created a tag');
    }),
  );

  it(
    'carol (security by DN, admins) pulls team-a/app and is an administrator',
    e2e.step(async () => {
      await skopeoLogin('carol');
      const dir = await e2e.tempDir('carol-pulled');
      await skopeoCopy(`docker://${ref(REPO)}`, `oci:${dir}:${image.tag}`, as('carol'));
      assert.deepEqual(digestsOf(await readOciLayoutManifest(dir, image.tag)), expected());
      // The DN-form rule matches her security group (her admin rights would hide it otherwise).
      const seen = await access('carol', REPO);
      assert.equal(seen.admin, true);
      assert.ok(
        seen.rules.some((rule) => rule.subject === `group:${SECURITY_DN}`),
        `the rule for group:${SECURITY_DN} does not apply to carol: ${JSON.stringify(seen)}`,
      );
      // Admin through the admins group: she may push where no rule names her, and use the admin API.
      await skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker://${ref(ADMIN_ONLY_REPO)}`, as('carol'));
      const carolToken = await new TestRegistry(e2e.registry.url, { username: 'carol', password: password('carol') }).token(['registry:admin:*']);
      const rules = await fetch(new URL('/admin/v1/rules', e2e.registry.url), { headers: { Authorization: `Bearer ${carolToken}` } });
      assert.equal(rules.status, 200, await rules.text());
    }),
  );

  it(
    'docker: a wrong password and an empty one are refused, alice logs in and pushes team-a/app',
    e2e.step(async () => {
      const docker = (args: string[]) => dockerd.run(args);
      const before = e2e.registry.output().length;
      const wrong = await failure(docker(['login', '--username', 'alice', '--password', 'not-alice-pass', e2e.host]), 'docker login with a wrong password');
      assert.match(wrong.stderr, LOGIN_REFUSED);
      const tokenAnswers = (await requestsSince(e2e, before)).filter((r) => r.path === '/auth/token');
      assert.ok(tokenAnswers.length > 0 && tokenAnswers.every((r) => r.status === 401), `token endpoint answers: ${JSON.stringify(tokenAnswers)}`);

      // The docker client refuses an empty password itself (it would prompt, and has no TTY)…
      const empty = await failure(docker(['login', '--username', 'alice', '--password', '', e2e.host]), 'docker login with an empty password');
      assert.match(empty.stderr, /password|non TTY|interactive/i);
      // …so ask the registry directly: an empty password must never reach the directory as an
      // (unauthenticated, successful) bind.
      const direct = await fetch(new URL(`/auth/token?service=portcullis&scope=repository:${REPO}:pull`, e2e.registry.url), {
        headers: { Authorization: `Basic ${Buffer.from('alice:').toString('base64')}` },
      });
      assert.equal(direct.status, 401, await direct.text());
      const config = join(dockerd.env.DOCKER_CONFIG, 'config.json');
      const savedBefore = await readFile(config, 'utf8').catch(() => '');
      assert.ok(!savedBefore.includes(e2e.host), `failed logins stored credentials: ${savedBefore}`);

      const { stdout } = await docker(['login', '--username', 'alice', '--password', password('alice'), e2e.host]);
      assert.match(stdout, /Login Succeeded/);
      assert.ok((await readFile(config, 'utf8')).includes(e2e.host), 'docker stored no credentials for the registry');

      const archive = join(e2e.tmp, 'image.tar');
      await skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker-archive:${archive}:${dockerLocal()}`);
      await docker(['load', '--input', archive]);
      const target = ref(REPO, 'from-docker');
      await docker(['tag', dockerLocal(), target]);
      const pushed = await docker(['push', target]);
      const digest = /digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(pushed.stdout)?.[1];
      assert.ok(digest, `docker push printed no digest:\n${pushed.stdout}`);
      await assertRegistryServes(e2e, { repository: REPO, tag: 'from-docker', manifestDigest: digest, mediaType: DOCKER_MANIFEST_V2 }, image);
    }),
  );

  it(
    'robot$ci pushes to team-a/ci/app with --dest-creds, and is denied team-a/other',
    e2e.step(async () => {
      const creds = ['--dest-creds', `robot$${ROBOT_NAME}:${robotSecret}`];
      await skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker://${ref(CI_REPO)}`, { ...as('robot'), flags: creds });
      assert.deepEqual(digestsOf(await inspectRaw(ref(CI_REPO))), expected());
      await assertDenied(skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker://${ref(OTHER_REPO)}`, { ...as('robot'), flags: creds }), 'robot push to team-a/other');
    }),
  );

  it(
    'group changes in the directory take effect once the group cache TTL has passed',
    e2e.step(async (): Promise<void> => {
      // A fresh login fills the group cache with alice's current groups.
      await inspectRaw(ref(REPO), as('alice'));
      const changed = Date.now();
      await slapd.modify(
        `dn: ${groupDn(slapd, 'developers')}\nchangetype: modify\ndelete: member\nmember: ${userDn(slapd, 'alice')}\n\n` +
          `dn: ${groupDn(slapd, 'security')}\nchangetype: modify\nadd: member\nmember: ${userDn(slapd, 'dave')}\n`,
      );
      // Within the TTL the cached groups may still let her push; either outcome is correct.
      const early = await skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker://${ref(REPO, 'within-ttl')}`, as('alice')).then(
        () => 'allowed',
        (err: unknown) => (err instanceof CommandError ? 'denied' : Promise.reject(err)),
      );
      process.stderr.write(`# push by alice ${Date.now() - changed} ms after her removal from developers: ${early}\n`);

      await sleep(Math.max(0, changed + GROUP_TTL_SECONDS * 1000 + 500 - Date.now()));
      const late = ref(REPO, 'after-ttl');
      await assertDenied(skopeoCopy(`oci:${image.dir}:${image.tag}`, `docker://${late}`, as('alice')), 'push by alice after the TTL');
      // docker, logged in as alice before, asks for its tokens with her stored password (POST).
      const dockerLate = ref(REPO, 'docker-after-ttl');
      await dockerd.run(['tag', dockerLocal(), dockerLate]);
      await assertDenied(dockerd.run(['push', dockerLate]), 'docker push by alice after the TTL');
      const tags = await listTags(`${e2e.host}/${REPO}`);
      assert.ok(!tags.includes('after-ttl') && !tags.includes('docker-after-ttl'), `alice's denied pushes created a tag: ${tags.join(' ')}`);
      // dave is in security now: the DN-form rule lets him pull, but not push.
      await podman('dave', ['pull', '--tls-verify=false', ref(REPO)]);
      await assertDenied(podman('dave', ['push', '--tls-verify=false', ref(REPO, 'dave')]), 'podman push as dave (security)');
    }),
  );

  it(
    'a username with LDAP filter syntax cannot log in',
    e2e.step(async () => {
      for (const username of ['*)(uid=*', '*']) {
        const before = e2e.registry.output().length;
        const err = await failure(skopeoLogin('intruder', username, 'anything'), `skopeo login as ${username}`);
        assert.match(err.stderr, LOGIN_REFUSED);
        const answers = (await requestsSince(e2e, before)).filter((r) => r.path === '/auth/token');
        // 401 as for any wrong credentials: not a 5xx from a filter the directory could not parse.
        assert.ok(answers.length > 0 && answers.every((r) => r.status === 401), `token endpoint answers for ${username}: ${JSON.stringify(answers)}`);
      }
      const saved = await readFile(authFile('intruder'), 'utf8').catch(() => '');
      assert.ok(!saved.includes(e2e.host), `a failed login stored credentials: ${saved}`);
    }),
  );
});
