// The admin API answers client mistakes as RFC 9457 problem documents (application/problem+json)
// with the status that names the mistake — 400, 403, 404, 405, 409, 413, 415 — never the OCI
// error body nor its UNSUPPORTED code; and subjects that can never match are refused with a hint.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { addUser, adminToken, api, errorCode, tokenFor, type ApiResponse } from './support.js';

let server: RunningRegistry;
let admin: string;

interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: { pointer: string; detail: string }[];
  requestId?: string;
}

before(async () => {
  server = await startPortcullis();
  admin = await adminToken(server);
});
after(() => server.stop());

/** Asserts a problem document with this status and title; returns it. */
function expectProblem(response: ApiResponse<unknown>, status: number, title: string): ProblemBody {
  assert.equal(response.status, status, response.text);
  assert.match(response.headers.get('Content-Type') ?? '', /^application\/problem\+json/, response.text);
  const body = response.body as ProblemBody;
  assert.equal(body.type, 'about:blank');
  assert.equal(body.title, title);
  assert.equal(body.status, status);
  assert.equal(typeof body.detail, 'string');
  assert.equal(errorCode(response.text), undefined, 'not an OCI error body');
  return body;
}

/** A raw admin call, for bodies and headers `api` would not send. */
async function raw(method: string, path: string, body: string | Buffer | undefined, headers: Record<string, string>): Promise<ApiResponse<unknown>> {
  const response = await fetch(`${server.url}${path}`, { method, headers: { Authorization: `Bearer ${admin}`, ...headers }, ...(body !== undefined ? { body } : {}) });
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: response.status, headers: response.headers, text, body: parsed };
}

async function storedRules(): Promise<unknown[]> {
  const response = await api<{ rules: unknown[] }>(server.url, admin, 'GET', '/admin/v1/rules');
  assert.equal(response.status, 200, response.text);
  return response.body.rules;
}

describe('admin API problem documents', () => {
  it('400 for malformed JSON and for a body that is not an object', async () => {
    const malformed = expectProblem(await api(server.url, admin, 'PUT', '/admin/v1/rules', '{"rules": ['), 400, 'Bad Request');
    assert.match(malformed.detail, /^request body is not valid JSON/);
    const array = expectProblem(await api(server.url, admin, 'POST', '/admin/v1/robots', '[]'), 400, 'Bad Request');
    assert.equal(array.detail, 'request body must be a JSON object');
  });

  it('400 for invalid fields, each named by a JSON Pointer', async () => {
    const before = await storedRules();
    const response = await api(server.url, admin, 'PUT', '/admin/v1/rules', {
      rules: [
        { subject: 'user:alice', repositories: 'team-a/**', actions: ['pull'] },
        { subject: 'user:bob', repositories: 'team-b/**', actions: ['pull', 'steal'] },
        { subject: 'usr:carol', repositories: 'Team-C', actions: ['pull'], expires: 'never' },
      ],
    });
    const problem = expectProblem(response, 400, 'Bad Request');
    assert.deepEqual(
      problem.errors?.map((error) => error.pointer),
      ['/rules/1/actions', '/rules/2/expires', '/rules/2/subject', '/rules/2/repositories'],
    );
    assert.match(problem.errors?.[0]?.detail ?? '', /unknown action "steal"/);
    assert.match(problem.detail, /rules\[1\]: unknown action "steal"/);
    assert.deepEqual(await storedRules(), before, 'nothing changed');

    const robot = expectProblem(await api(server.url, admin, 'POST', '/admin/v1/robots', { name: 'ci', expiresat: '2099-01-01T00:00:00Z' }), 400, 'Bad Request');
    assert.deepEqual(robot.errors, [{ pointer: '/expiresat', detail: 'unknown key expiresat' }], 'a misspelt expiry is not ignored');
    const single = expectProblem(await api(server.url, admin, 'POST', '/admin/v1/rules', { subject: 'user:alice', repositories: 'x/**' }), 400, 'Bad Request');
    assert.deepEqual(single.errors?.map((error) => error.pointer), ['/actions']);
    const query = expectProblem(await api(server.url, admin, 'GET', '/admin/v1/audit?limit=lots'), 400, 'Bad Request');
    assert.match(query.detail, /limit must be a whole number from 1 to 1000/);
  });

  it('400 with a hint for subjects that can never match', async () => {
    const cases: [string, RegExp][] = [
      ['group:CORP\\developers', /use the group's name \(cn\), e\.g\. group:developers, or its full DN/],
      ['user:CORP\\alice', /people sign in as alice .*user:alice/],
      ['user:', /the name is empty/],
      ['group: ', /the name is empty/],
      ['user:al\u0007ice', /control character/],
      ['robot:CI', /robot names are 1-64 of a-z 0-9/],
    ];
    for (const [subject, hint] of cases) {
      const put = expectProblem(await api(server.url, admin, 'PUT', '/admin/v1/rules', { rules: [{ subject, repositories: 'team-a/**', actions: ['pull'] }] }), 400, 'Bad Request');
      assert.equal(put.errors?.[0]?.pointer, '/rules/0/subject', put.detail);
      assert.match(put.errors?.[0]?.detail ?? '', hint);
      const post = expectProblem(await api(server.url, admin, 'POST', '/admin/v1/rules', { subject, repositories: 'team-a/**', actions: ['pull'] }), 400, 'Bad Request');
      assert.match(post.detail, hint);
    }
    assert.deepEqual(await storedRules(), []);
  });

  it('404 for an unknown robot, rule, refresh token or subject, and for unknown admin paths', async () => {
    assert.match(expectProblem(await api(server.url, admin, 'DELETE', '/admin/v1/robots/nobody'), 404, 'Not Found').detail, /no active robot nobody/);
    assert.match(expectProblem(await api(server.url, admin, 'DELETE', '/admin/v1/rules/424242'), 404, 'Not Found').detail, /no rule with id "424242"/);
    expectProblem(await api(server.url, admin, 'DELETE', '/admin/v1/rules/not-a-number'), 404, 'Not Found');
    expectProblem(await api(server.url, admin, 'DELETE', '/admin/v1/refresh-tokens/0123456789abcdef01234567'), 404, 'Not Found');
    expectProblem(await api(server.url, admin, 'GET', '/admin/v1/access?subject=nobody&repository=team-a/app'), 404, 'Not Found');
    assert.match(expectProblem(await api(server.url, admin, 'GET', '/admin/v1/nothing-here'), 404, 'Not Found').detail, /no admin endpoint \/admin\/v1\/nothing-here/);
  });

  it('405 with Allow for a method a known path does not take', async () => {
    const response = await api(server.url, admin, 'PATCH', '/admin/v1/rules', { rules: [] });
    const problem = expectProblem(response, 405, 'Method Not Allowed');
    assert.equal(problem.detail, 'PATCH is not allowed here');
    assert.equal(response.headers.get('Allow'), 'GET, PUT, POST, HEAD');
    assert.equal((await api(server.url, admin, 'GET', '/admin/v1/robots/ci')).headers.get('Allow'), 'DELETE');
  });

  it('409 when a robot name is taken', async () => {
    assert.equal((await api(server.url, admin, 'POST', '/admin/v1/robots', { name: 'builder' })).status, 201);
    assert.match(expectProblem(await api(server.url, admin, 'POST', '/admin/v1/robots', { name: 'builder' }), 409, 'Conflict').detail, /robot builder already exists/);
  });

  it('413 for a body over 1 MiB, and nothing changes', async () => {
    const before = await storedRules();
    const rules = Array.from({ length: 20_000 }, (_, index) => ({ subject: `user:u${index}`, repositories: 'team-a/**', actions: ['pull'] }));
    const body = JSON.stringify({ rules });
    assert.ok(body.length > 1024 * 1024);
    const problem = expectProblem(await api(server.url, admin, 'PUT', '/admin/v1/rules', body), 413, 'Content Too Large');
    assert.equal(problem.detail, 'request body is larger than 1048576 bytes');
    assert.deepEqual(await storedRules(), before);
    // The half-sent body is not taken for the next request (the connection was closed).
    for (let attempt = 0; attempt < 3; attempt++) {
      const next = await raw('PUT', '/admin/v1/rules?dryRun=true', JSON.stringify({ rules: [] }), { 'Content-Type': 'application/json' });
      assert.equal(next.status, 200, next.text);
    }
  });

  it('415 for a body that is not JSON by its Content-Type, or is compressed', async () => {
    const json = JSON.stringify({ rules: [] });
    const plain = expectProblem(await raw('PUT', '/admin/v1/rules', json, { 'Content-Type': 'text/plain' }), 415, 'Unsupported Media Type');
    assert.match(plain.detail, /send the request body as application\/json \(got "text\/plain"\)/);
    const form = await raw('POST', '/admin/v1/robots', 'name=ci', { 'Content-Type': 'application/x-www-form-urlencoded' });
    expectProblem(form, 415, 'Unsupported Media Type');
    expectProblem(await raw('PUT', '/admin/v1/rules', Buffer.from(json), {}), 415, 'Unsupported Media Type');
    expectProblem(await raw('PUT', '/admin/v1/rules', json, { 'Content-Type': 'application/json; charset=latin1' }), 415, 'Unsupported Media Type');
    expectProblem(await raw('PUT', '/admin/v1/rules', json, { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' }), 415, 'Unsupported Media Type');
    // What is accepted: JSON, with or without a UTF-8 charset, and +json types.
    for (const type of ['application/json', 'application/json; charset=utf-8', 'application/merge-patch+json']) {
      const accepted = await raw('PUT', '/admin/v1/rules?dryRun=true', json, { 'Content-Type': type });
      assert.equal(accepted.status, 200, `${type}: ${accepted.text}`);
    }
  });

  it('403 for a non-administrator is a problem document too; 401 keeps its token challenge', async () => {
    await addUser(server.dataDir, 'mallory', 'mallory-password-1234');
    const token = await tokenFor(server.url, { username: 'mallory', password: 'mallory-password-1234' }, ['registry:admin:*']);
    const denied = expectProblem(await api(server.url, token, 'PUT', '/admin/v1/rules', '{not json'), 403, 'Forbidden');
    assert.equal(denied.detail, 'administrator rights required');
    expectProblem(await api(server.url, token, 'GET', '/admin/v1/nothing-here'), 403, 'Forbidden');
    const anonymous = await api(server.url, undefined, 'PUT', '/admin/v1/rules', { rules: [] });
    assert.equal(anonymous.status, 401);
    assert.equal(errorCode(anonymous.text), 'UNAUTHORIZED');
    assert.match(anonymous.headers.get('WWW-Authenticate') ?? '', /scope="registry:admin:\*"/);
  });

  it('the registry API keeps its OCI error bodies', async () => {
    const response = await fetch(`${server.url}/v2/team-a/app/manifests/latest`);
    assert.equal(response.status, 401);
    assert.equal(errorCode(await response.text()), 'UNAUTHORIZED');
  });
});
