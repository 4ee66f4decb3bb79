// Abuse of the token endpoint: failed logins are throttled per user name and address (five free
// failures, then 1 s after the sixth, doubling), per user name (twenty: only for the addresses
// that failed, so the owner is never locked out by others) and per address (fifty), every
// spelling of a name shares one budget, the limits are configurable, a burst of parallel guesses
// gets no more tries than a sequence would, and response times do not tell which user names
// exist. The counts live in the metadata database: a restart forgets none of them (two servers on
// one PostgreSQL database: shared-throttle.test.ts). Every request picks its loopback source
// address (127.x.y.z), which the server sees as the client address, so the kinds of throttling
// can be told apart. At the end, unit checks of the keys (IPv6 per /64) and of the window.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { addressKey, LoginThrottle } from '../../src/auth/login-throttle.js';
import { migrateToLatest, openDatabase } from '../../src/metadata/database.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { addUser, basic, errorCode, requestFrom, sleep, type RawResponse } from './support.js';

let server: RunningRegistry;
const victim = { username: 'victim', password: 'victim-password-123' };
const racer = { username: 'racer', password: 'racer-password-4567' };
const ivy = { username: 'ivy', password: 'ivy-password-98765' };

before(async () => {
  server = await startPortcullis();
  await addUser(server.dataDir, victim.username, victim.password);
  await addUser(server.dataDir, racer.username, racer.password);
  await addUser(server.dataDir, ivy.username, ivy.password);
});
after(() => server.stop());

function login(
  from: string,
  credentials: { username: string; password: string },
  headers: Record<string, string> = {},
  on: RunningRegistry = server,
): Promise<RawResponse> {
  return requestFrom(from, `${on.url}/auth/token?service=portcullis&scope=repository:x/y:pull`, {
    headers: { Authorization: basic(credentials), ...headers },
  });
}

function postLogin(from: string, credentials: { username: string; password: string }): Promise<RawResponse> {
  return requestFrom(from, `${server.url}/auth/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', username: credentials.username, password: credentials.password, client_id: 'tests' }).toString(),
  });
}

function expectStatus(response: RawResponse, status: number, what: string): void {
  assert.equal(response.status, status, `${what}: ${response.status} ${response.body}`);
}

function expectThrottled(response: RawResponse, what: string, retryAfter?: number): void {
  expectStatus(response, 429, what);
  assert.equal(errorCode(response.body), 'TOOMANYREQUESTS', response.body);
  const header = String(response.headers['retry-after'] ?? '');
  assert.match(header, /^\d+$/, `${what}: Retry-After ${header}`);
  if (retryAfter !== undefined) assert.equal(Number(header), retryAfter, `${what}: Retry-After`);
}

describe('login throttling', () => {
  it('after five free failures for a user from one address, the sixth starts a 1 s wait there, then 2 s', async () => {
    const wrong = { ...victim, password: 'not-the-password' };
    const from = '127.0.1.1';
    for (let i = 1; i <= 6; i++) expectStatus(await login(from, wrong), 401, `failure ${i}`);
    const sixth = Date.now();
    expectThrottled(await login(from, victim), 'the right password while throttled', 1);
    expectThrottled(await postLogin(from, victim), 'the OAuth2 password grant while throttled', 1);
    // Someone else's typos do not lock the user out everywhere: another address still works,
    // while the guessing address stays throttled.
    expectStatus(await login('127.0.1.2', victim), 200, 'the same user from another address');
    expectThrottled(await login(from, victim), 'the guessing address after a success elsewhere');

    await sleep(sixth + 1_050 - Date.now());
    expectStatus(await login(from, wrong), 401, 'the seventh failure, after the wait');
    const seventh = Date.now();
    expectThrottled(await login(from, victim), 'after the seventh failure', 2);

    await sleep(seventh + 2_050 - Date.now());
    expectStatus(await login(from, victim), 200, 'the right password after the doubled wait');
  });

  it('after twenty failures for one user from many addresses, those addresses wait; the owner from another still logs in', async () => {
    const spread = { username: 'spread', password: 'spread-password-123' };
    await addUser(server.dataDir, spread.username, spread.password);
    const wrong = { ...spread, password: 'not-the-password' };
    for (let i = 1; i <= 21; i++) expectStatus(await login(`127.0.5.${i}`, wrong), 401, `failure ${i}`);
    // Every address that failed for the name waits, even with the right password, in any spelling.
    expectThrottled(await login('127.0.5.1', spread), 'the right password from an address that failed');
    for (const username of [' SPREAD ', 'Spread', 'ＳＰＲＥＡＤ']) {
      expectThrottled(await login('127.0.5.2', { ...spread, username }), `the spelling ${JSON.stringify(username)}`);
    }
    // The owner, from an address that has not failed for the name, is not locked out by the others.
    expectStatus(await login('127.0.5.99', spread), 200, 'the right password from a fresh address');
    // A fresh address that fails while the name is locked is locked with it.
    expectStatus(await login('127.0.5.98', wrong), 401, 'a wrong password from a fresh address');
    expectThrottled(await login('127.0.5.98', spread), 'that address afterwards, even with the right password');
    expectThrottled(await login('127.0.5.3', spread), 'the failed addresses, after the owner logged in');
  });

  it('names the directory treats as equal share one budget: case, İ and ı, fullwidth forms, accents, spaces', async () => {
    const from = '127.0.6.1';
    const spellings = ['ivy', 'IVY', 'İvy', 'ıvy', 'ｉｖｙ', 'ívy'];
    for (const [i, username] of spellings.entries()) {
      expectStatus(await login(from, { username, password: 'not-the-password' }), 401, `failure ${i + 1} as ${username}`);
    }
    for (const username of ['ivy', ' Ivy ', 'I\u0307vy']) {
      expectThrottled(await login(from, { ...ivy, username }), `the right password as ${JSON.stringify(username)}`);
    }
    expectStatus(await login('127.0.6.2', ivy), 200, 'another address');
  });

  it('failures from one address throttle every user from that address, and only that address', async () => {
    // An address gets 50 free failures (many people can share one NAT or proxy), then backoff.
    const address = '127.0.2.1';
    const free = 50;
    for (let i = 1; i <= free + 1; i++) {
      expectStatus(await login(address, { username: `ghost${i}`, password: 'whatever-password' }), 401, `failure ${i}`);
    }
    const sixth = Date.now();
    expectThrottled(await login(address, server.admin), 'another user from the same address', 1);
    // X-Forwarded-For is not trusted: it cannot move the caller to a fresh address.
    expectThrottled(await login(address, server.admin, { 'X-Forwarded-For': '203.0.113.7' }), 'with a forged X-Forwarded-For');
    expectThrottled(await login(address, server.admin, { 'X-Real-IP': '203.0.113.8', Forwarded: 'for=203.0.113.9' }), 'with X-Real-IP / Forwarded');
    expectStatus(await login('127.0.2.2', server.admin), 200, 'the same user from another address');

    await sleep(sixth + 1_050 - Date.now());
    expectStatus(await login(address, server.admin), 200, 'after the wait');
  });

  it('a burst of parallel guesses gets no more tries than guesses one after another would', async () => {
    const attempts = 20;
    const responses = await Promise.all(
      Array.from({ length: attempts }, (_, i) => login('127.0.3.1', { ...racer, password: `guess-number-${i}` })),
    );
    const statuses = responses.map((response) => response.status);
    assert.ok(statuses.every((status) => status === 401 || status === 429), statuses.join(' '));
    const evaluated = statuses.filter((status) => status === 401).length;
    // Sequentially: five free failures, the sixth starts the wait, everything after is 429.
    assert.ok(evaluated <= 6, `${evaluated} of ${attempts} parallel guesses were checked against the password (at most 6 should be): ${statuses.join(' ')}`);
  });
});

describe('a restart', () => {
  it('keeps the counts: the embedded database holds them, not the process', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'portcullis-throttle-restart-'));
    let running = await startPortcullis({ dataDir });
    try {
      const wrong = { ...running.admin, password: 'not-the-password' };
      const from = '127.0.9.1';
      for (let i = 1; i <= 4; i++) expectStatus(await login(from, wrong, {}, running), 401, `failure ${i} before the restart`);
      await running.stop();
      running = await startPortcullis({ dataDir });
      expectStatus(await login(from, wrong, {}, running), 401, 'failure 5, after the restart');
      expectStatus(await login(from, wrong, {}, running), 401, 'failure 6, after the restart: it starts the wait');
      expectThrottled(await login(from, running.admin, {}, running), 'the right password', 1);
    } finally {
      await running.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('configured limits (auth.loginThrottle)', () => {
  it('free failures per name and address, per name, and the longest wait come from the configuration', async () => {
    const strict = await startPortcullis({
      env: {
        PORTCULLIS_AUTH_LOGIN_THROTTLE_FREE_FAILURES_PER_NAME_AND_ADDRESS: '2',
        PORTCULLIS_AUTH_LOGIN_THROTTLE_FREE_FAILURES_PER_NAME: '3',
        PORTCULLIS_AUTH_LOGIN_THROTTLE_MAX_DELAY_SECONDS: '1',
        PORTCULLIS_AUTH_LOGIN_THROTTLE_MIN_FAILED_LOGIN_MS: '0',
      },
    });
    try {
      const wrong = { ...strict.admin, password: 'not-the-password' };
      for (let i = 1; i <= 3; i++) expectStatus(await login('127.0.8.1', wrong, {}, strict), 401, `failure ${i}`);
      expectThrottled(await login('127.0.8.1', strict.admin, {}, strict), 'after 2 free failures and a third', 1);
      // The name-wide budget (3) is spent too: another address that failed once waits.
      expectStatus(await login('127.0.8.2', wrong, {}, strict), 401, 'a failure from a second address');
      expectThrottled(await login('127.0.8.2', strict.admin, {}, strict), 'the second address');
      // Waits never grow past maxDelaySeconds.
      for (let i = 0; i < 3; i++) {
        await sleep(1_050);
        expectStatus(await login('127.0.8.1', wrong, {}, strict), 401, `a later failure ${i}`);
        expectThrottled(await login('127.0.8.1', strict.admin, {}, strict), `still 1 s after failure ${i}`, 1);
      }
    } finally {
      await strict.stop();
    }
  });

  it('a bad auth.loginThrottle value stops startup, naming the key', async () => {
    await assert.rejects(
      startPortcullis({ env: { PORTCULLIS_AUTH_LOGIN_THROTTLE_MAX_DELAY_SECONDS: 'soon' } }),
      /auth\.loginThrottle\.maxDelaySeconds must be integer/,
    );
  });
});

describe('user enumeration', () => {
  it('a wrong password for an existing user takes about as long as one for a user that does not exist', async () => {
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
    const timed = async (from: string, username: string): Promise<number> => {
      const started = performance.now();
      expectStatus(await login(from, { username, password: 'definitely-wrong-password' }), 401, username);
      return performance.now() - started;
    };
    // Warm up both paths (first hash, first query), then measure alternately.
    await timed('127.0.4.1', 'admin');
    await timed('127.0.4.2', 'nobody-0');
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 3; i++) {
      known.push(await timed(`127.0.4.${10 + i}`, 'admin'));
      unknown.push(await timed(`127.0.4.${20 + i}`, `nobody-${i + 1}`));
    }
    const [k, u] = [median(known), median(unknown)];
    assert.ok(u >= k * 0.3, `unknown user answered in ${u.toFixed(1)} ms, existing user in ${k.toFixed(1)} ms: the difference tells which names exist`);
  });
});

describe('the throttle keys and window (unit)', () => {
  it('counts IPv4 addresses one by one and IPv6 addresses by their /64', () => {
    assert.equal(addressKey('192.0.2.7'), '192.0.2.7');
    assert.equal(addressKey('::ffff:192.0.2.7'), '192.0.2.7', 'an IPv4-mapped address is the IPv4 address');
    for (const address of ['2001:db8:1:2:3:4:5:6', '2001:0db8:0001:0002::7', '2001:db8:1:2::', '2001:db8:1:2:ffff:ffff:ffff:ffff']) {
      assert.equal(addressKey(address), '2001:db8:1:2::/64', address);
    }
    assert.notEqual(addressKey('2001:db8:1:3::1'), addressKey('2001:db8:1:2::1'), 'another /64');
    assert.equal(addressKey('::1'), '0:0:0:0::/64');
  });

  it('forgets a key\'s failures a window after the last one, not after the first', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-throttle-unit-'));
    const db = openDatabase({ driver: 'sqlite', path: join(dir, 'portcullis.db') });
    try {
      await migrateToLatest(db);
      const windowMs = 2_000;
      const throttle = new LoginThrottle(
        { db, driver: 'sqlite' },
        { freePerUserAndAddress: 2, freePerUser: 1_000, freePerAddress: 1_000, baseDelayMs: 400, maxDelayMs: 60_000, windowMs, minFailureMs: 0 },
      );
      const started = Date.now();
      const at = (ms: number) => sleep(started + ms - Date.now());
      await throttle.recordFailure('kim', '192.0.2.1');
      await at(1_200);
      await throttle.recordFailure('kim', '192.0.2.1');
      assert.equal(await throttle.retryAfter('kim', '192.0.2.1'), 0, 'two failures are free');
      // A window after the first failure, less than one after the second: all three count.
      await at(2_200);
      await throttle.recordFailure('kim', '192.0.2.1');
      const wait = await throttle.retryAfter('kim', '192.0.2.1');
      assert.ok(wait > 200 && wait <= 400, `the third failure starts a 400 ms wait: ${wait}`);
      // A window after the last failure, everything is forgotten: two failures are free again.
      await at(2_200 + windowMs + 200);
      assert.equal(await throttle.retryAfter('kim', '192.0.2.1'), 0);
      await throttle.recordFailure('kim', '192.0.2.1');
      await throttle.recordFailure('kim', '192.0.2.1');
      assert.equal(await throttle.retryAfter('kim', '192.0.2.1'), 0, 'two failures after the window are free');
    } finally {
      await db.destroy();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
