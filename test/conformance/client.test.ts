// Unit tests for the conformance runner's own machinery (no Portcullis needed): challenge
// parsing, Docker token auth, Basic auth, Location resolution, Link parsing, the report.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { RegistryClient, RegistryResponse, nextLink, parseChallenge } from '../../conformance/client.js';
import { formatTable, runConformance } from '../../conformance/runner.js';

type Handler = (req: IncomingMessage, res: ServerResponse, base: string) => void;

let server: Server;
let base = '';
let handler: Handler = (_req, res) => res.writeHead(404).end();

before(async () => {
  server = createServer((req, res) => handler(req, res, base));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;

test('parseChallenge reads scheme and quoted parameters', () => {
  const challenge = parseChallenge(
    'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
  );
  assert.equal(challenge.scheme, 'bearer');
  assert.deepEqual(challenge.params, {
    realm: 'https://auth.example/token',
    service: 'registry.example',
    scope: 'repository:a/b:pull,push',
  });
});

test('nextLink finds rel="next" among Link values', () => {
  const response = (link: string) =>
    new RegistryResponse('GET', new URL('http://r/v2/_catalog'), 200, new Headers({ Link: link }), Buffer.alloc(0));
  assert.equal(nextLink(response('</v2/_catalog?last=b&n=1>; rel="next"')), '/v2/_catalog?last=b&n=1');
  assert.equal(nextLink(response('<http://x/prev>; rel="prev", <http://x/next>; rel=next')), 'http://x/next');
  assert.equal(nextLink(response('<http://x/prev>; rel="prev"')), undefined);
});

test('resolve keeps a Location query and resolves relative and absolute targets', () => {
  const client = new RegistryClient({ url: 'http://registry.test:5000' });
  const relative = client.resolve('/v2/a/blobs/uploads/1?_state=xyz', { digest: 'sha256:00' });
  assert.equal(relative.href, 'http://registry.test:5000/v2/a/blobs/uploads/1?_state=xyz&digest=sha256%3A00');
  assert.equal(client.resolve('https://uploads.test/u/1').href, 'https://uploads.test/u/1');
});

test('Docker token auth: a Bearer challenge fetches a token with Basic credentials and retries', async () => {
  const tokenRequests: URL[] = [];
  handler = (req, res, origin) => {
    const url = new URL(req.url ?? '/', origin);
    if (url.pathname === '/token') {
      tokenRequests.push(url);
      if (req.headers.authorization !== basic('alice', 's3cret')) return void res.writeHead(401).end();
      res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token: 'tok-1' }));
      return;
    }
    if (req.headers.authorization === 'Bearer tok-1') return void res.writeHead(200).end('{}');
    res
      .writeHead(401, {
        'WWW-Authenticate': `Bearer realm="${origin}/token",service="test-registry",scope="repository:a/b:pull"`,
      })
      .end();
  };
  const client = new RegistryClient({ url: base, username: 'alice', password: 's3cret' });
  assert.equal((await client.request('GET', '/v2/a/b/tags/list')).status, 200);
  assert.equal(tokenRequests.length, 1);
  assert.equal(tokenRequests[0]?.searchParams.get('service'), 'test-registry');
  assert.deepEqual(tokenRequests[0]?.searchParams.getAll('scope'), ['repository:a/b:pull']);
  // The token is reused without another challenge.
  assert.equal((await client.request('GET', '/v2/')).status, 200);
  assert.equal(tokenRequests.length, 1);
});

test('Basic auth: a Basic challenge is answered with the credentials once', async () => {
  let requests = 0;
  handler = (req, res) => {
    requests++;
    if (req.headers.authorization === basic('bob', 'pw')) return void res.writeHead(200).end('{}');
    res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="registry"' }).end();
  };
  assert.equal((await new RegistryClient({ url: base, username: 'bob', password: 'pw' }).request('GET', '/v2/')).status, 200);
  assert.equal(requests, 2);
  requests = 0;
  assert.equal((await new RegistryClient({ url: base, username: 'bob', password: 'no' }).request('GET', '/v2/')).status, 401);
  assert.equal(requests, 2, 'wrong credentials are tried once, not in a loop');
});

test('a registry that answers 404 to everything fails the checks, and the report says so', async () => {
  handler = (_req, res) => res.writeHead(404).end();
  const results = await runConformance({ url: base, workflows: ['pull'] });
  const passed = results.filter((r) => r.passed).map((r) => r.check);
  // Only the checks that want a bare 404 for HEAD can pass here.
  assert.deepEqual(passed, ['HEAD unknown manifest -> 404', 'HEAD unknown blob -> 404']);
  const lines = formatTable(results).split('\n');
  assert.match(lines[0] ?? '', /^WORKFLOW +\| CHECK +\| RESULT +\| DETAIL$/);
  assert.match(lines.find((l) => l.includes('GET /v2/ -> 200')) ?? '', /\| FAIL +\| GET \/v2\/ -> 404, expected 200$/);
  assert.equal(lines.at(-1), `2 passed, ${results.length - 2} failed`);
});
