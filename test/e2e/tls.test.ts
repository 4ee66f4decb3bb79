// Portcullis serving HTTPS itself: skopeo pushes and pulls with certificate verification on (no
// insecure-registry setting), and a renewed certificate is picked up without a restart.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:https';
import { connect } from 'node:tls';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { skopeo } from '../support/clients.js';
import { createOciLayout } from '../support/oci-layout.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';

const run = promisify(execFile);

/** A CA and a server certificate for 127.0.0.1 signed by it; returns their paths. */
async function issue(dir: string, name: string, ca?: { cert: string; key: string }): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  if (!ca) {
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${name}`]);
    return { cert, key };
  }
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  await writeFile(ext, 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`]);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext]);
  return { cert, key };
}

/** The common name of the certificate the server presents now. */
function servedName(host: string, caFile: Buffer): Promise<string> {
  const [hostname, port] = host.split(':');
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port), ca: caFile }, () => {
      const subject = socket.getPeerCertificate().subject;
      socket.end();
      resolve(String(subject?.CN ?? ''));
    });
    socket.once('error', reject);
  });
}

describe('TLS served by Portcullis', () => {
  let dir: string;
  let server: RunningRegistry;
  let ca: { cert: string; key: string };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-tls-'));
    ca = await issue(dir, 'test-ca');
    const leaf = await issue(dir, 'first', ca);
    await rename(leaf.cert, join(dir, 'server.crt'));
    await rename(leaf.key, join(dir, 'server.key'));
    server = await startPortcullis({
      scheme: 'https',
      env: { PORTCULLIS_TLS_CERTIFICATE: join(dir, 'server.crt'), PORTCULLIS_TLS_KEY: join(dir, 'server.key') },
    });
  });
  after(async () => {
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('lets skopeo push and pull with certificate verification on', async () => {
    // skopeo trusts the CA of a registry from <cert-dir>/ca.crt; nothing under /etc is touched.
    const certDir = join(dir, 'certs.d');
    await mkdir(certDir);
    await run('cp', [ca.cert, join(certDir, 'ca.crt')]);
    const layout = await createOciLayout({ dir: join(dir, 'layout'), layers: 1 });
    const creds = `${server.admin.username}:${server.admin.password}`;
    const target = `docker://${server.host}/tls/app:${layout.tag}`;
    await skopeo(['copy', '--dest-cert-dir', certDir, '--dest-creds', creds, `oci:${layout.dir}:${layout.tag}`, target]);
    const { stdout } = await skopeo(['inspect', '--raw', '--cert-dir', certDir, '--creds', creds, target]);
    assert.equal(JSON.parse(stdout).layers.length, 1);
    // Without the CA the same client refuses the server: verification really is on.
    await assert.rejects(skopeo(['inspect', '--raw', '--creds', creds, target]), /certificate|x509/);
  });

  it('marks the web console\'s session cookie Secure', async () => {
    const caFile = await readFile(ca.cert);
    const setCookie = await new Promise<string>((resolve, reject) => {
      const body = JSON.stringify(server.admin);
      const call = request(`${server.url}/ui/api/session`, { method: 'POST', ca: caFile, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } }, (response) => {
        response.resume();
        assert.equal(response.statusCode, 201);
        resolve(String(response.headers['set-cookie']?.[0] ?? ''));
      });
      call.once('error', reject);
      call.end(body);
    });
    assert.match(setCookie, /^portcullis_console=.*; HttpOnly; SameSite=Strict; Secure$/);
  });

  it('picks up a renewed certificate without a restart', async () => {
    const caFile = await readFile(ca.cert);
    assert.equal(await servedName(server.host, caFile), 'first');
    const renewed = await issue(dir, 'renewed', ca);
    await rename(renewed.key, join(dir, 'server.key'));
    await rename(renewed.cert, join(dir, 'server.crt'));
    const deadline = Date.now() + 30_000;
    while ((await servedName(server.host, caFile)) !== 'renewed') {
      if (Date.now() > deadline) throw new Error('the renewed certificate was not picked up');
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  });
});
