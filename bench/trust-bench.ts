// What the trust layer costs, measured against a Portcullis this script starts:
// - manifest GET by tag (bearer token on every request) in a repository whose policy enforces
//   signatures (the image signed with cosign) against one no policy covers, alternating rounds so
//   both see the same machine; the goal is ≥ 90 %;
// - signatures verified per second for each format, in this process, one at a time (what a push
//   of a signature or a re-verification after a policy change costs).
//
//   node dist/bench/trust-bench.js [--seconds 5] [--rounds 3] [--concurrency 64] [--verify-seconds 2]
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as openpgp from 'openpgp';
import { CosignSignatureVerifier } from '../src/trust/cosign.js';
import { GpgVerifier } from '../src/trust/gpg.js';
import { SigstoreBundleVerifier } from '../src/trust/sigstore-bundle.js';
import type { SignedSubject, TrustContext, VerificationResult } from '../src/trust/verifier.js';
import { cosignPayload, cosignSignature, createFakeSigstore, inTotoStatement, makeKey, type KeyKind } from '../test/support/signing.js';
import { HttpClient } from './lib/http-client.js';
import { ascending, percentile, runFor } from './lib/pool.js';
import { OCI_MANIFEST, RegistryOps, sha256 } from './lib/registry-ops.js';
import { PORTCULLIS_BENCH_ADMIN, portcullisSpec, startRegistry } from './lib/servers.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '64' },
    'verify-seconds': { type: 'string', default: '2' },
  },
});
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const concurrency = Number(values.concurrency);
const verifySeconds = Number(values['verify-seconds']);

const SUBJECT: SignedSubject = { repository: 'prod/app', manifestDigest: sha256(Buffer.from('an image')) };
const HOST = 'registry.example';

/** Runs `verify` back to back for the given time; every result must be valid. */
async function rate(label: string, verify: () => Promise<VerificationResult>): Promise<string> {
  const first = await verify();
  if (first.outcome !== 'valid') throw new Error(`${label}: ${first.reason}`);
  let count = 0;
  const started = performance.now();
  while (performance.now() - started < verifySeconds * 1000) {
    await verify();
    count++;
  }
  const perSecond = count / ((performance.now() - started) / 1000);
  return `${label.padEnd(44)} ${perSecond.toFixed(0).padStart(8)} /s`;
}

async function verificationRates(): Promise<string[]> {
  const lines: string[] = [];
  const cosign = new CosignSignatureVerifier();
  const payload = cosignPayload({ reference: `${HOST}/${SUBJECT.repository}`, digest: SUBJECT.manifestDigest });
  const kinds: [KeyKind, string][] = [
    ['ecdsa-p256', 'cosign, ECDSA P-256'],
    ['ecdsa-p384', 'cosign, ECDSA P-384'],
    ['ed25519', 'cosign, Ed25519'],
    ['rsa-pkcs1', 'cosign, RSA 2048'],
  ];
  for (const [kind, label] of kinds) {
    const key = makeKey(kind);
    const trust: TrustContext = { signers: [{ name: 'release', kind: 'cosign', publicKeyPem: key.publicKeyPem }] };
    const signature = { payload, signatureBase64: cosignSignature(key, payload) };
    lines.push(await rate(label, () => cosign.verify(signature, SUBJECT, trust)));
  }

  const bundles = new SigstoreBundleVerifier();
  const sigstore = await createFakeSigstore();
  const statement = inTotoStatement({ digest: SUBJECT.manifestDigest, name: `${HOST}/${SUBJECT.repository}` });
  const key = makeKey('ecdsa-p256');
  const keyed = { bundle: await sigstore.signWithKey(statement, key), referrerSubjectDigest: SUBJECT.manifestDigest };
  const keyedTrust: TrustContext = { signers: [{ name: 'release', kind: 'cosign', publicKeyPem: key.publicKeyPem }], trustedRoot: sigstore.trustedRoot };
  lines.push(await rate('sigstore bundle, keyed (Rekor entry)', () => bundles.verify(keyed, SUBJECT, keyedTrust)));
  const identity = { subject: 'https://ci.example/acme/release', issuer: 'https://issuer.example' };
  const keyless = { bundle: await sigstore.signKeyless(statement, identity), referrerSubjectDigest: SUBJECT.manifestDigest };
  const keylessTrust: TrustContext = { signers: [{ name: 'ci', kind: 'keyless', ...identity }], trustedRoot: sigstore.trustedRoot };
  lines.push(await rate('sigstore bundle, keyless (Fulcio + CT + Rekor)', () => bundles.verify(keyless, SUBJECT, keylessTrust)));

  const gpg = new GpgVerifier();
  const { privateKey, publicKey } = await openpgp.generateKey({ userIDs: [{ name: 'Release', email: 'release@example.test' }], format: 'object' });
  const document = JSON.stringify({
    critical: { identity: { 'docker-reference': `${HOST}/${SUBJECT.repository}:v1` }, image: { 'docker-manifest-digest': SUBJECT.manifestDigest }, type: 'atomic container signature' },
    optional: {},
  });
  const message = Buffer.from(await openpgp.sign({ message: await openpgp.createMessage({ binary: Buffer.from(document) }), signingKeys: privateKey, format: 'binary' }));
  const gpgTrust: TrustContext = { signers: [{ name: 'release', kind: 'gpg', armoredPublicKey: publicKey.armor() }] };
  lines.push(await rate('GPG simple signing, Ed25519 (openpgp default)', () => gpg.verify({ message }, SUBJECT, gpgTrust)));
  return lines;
}

async function manifestGetRates(): Promise<string[]> {
  const registry = await startRegistry(portcullisSpec(MAIN), tmpdir());
  try {
    const client = new HttpClient(registry.url, { ...PORTCULLIS_BENCH_ADMIN });
    const ops = new RegistryOps(client);
    const plain = 'plain/app';
    const enforced = 'prod/app';
    const plainDigest = await ops.pushSmallImage(plain, 'latest', 'plain');
    const signedDigest = await ops.pushSmallImage(enforced, 'latest', 'signed');

    const key = makeKey('ecdsa-p256');
    const host = new URL(registry.url).host;
    const payload = cosignPayload({ reference: `${host}/${enforced}`, digest: signedDigest });
    const config = await ops.pushBlob(enforced, Buffer.from('{}'), 'application/vnd.oci.image.config.v1+json');
    const layer = await ops.pushBlob(enforced, payload, 'application/vnd.dev.cosign.simplesigning.v1+json');
    await ops.putManifest(enforced, `${signedDigest.replace(':', '-')}.sig`, {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config,
      layers: [{ ...layer, annotations: { 'dev.cosignproject.cosign/signature': cosignSignature(key, payload) } }],
    });
    // The policy after the signature: an enforce repository whose image was signed before it.
    const dataDir = join(registry.dataDir, 'data');
    writeFileSync(join(dataDir, 'cosign.pub'), key.publicKeyPem);
    writeFileSync(join(dataDir, 'trust.yaml'), 'policies:\n  - repositories: prod/**\n    signatures: { mode: enforce, signers: [{ name: release, cosign: cosign.pub }] }\n');
    execFileSync(process.execPath, [MAIN, 'trust', 'apply', '-f', join(dataDir, 'trust.yaml')], { env: { ...process.env, PORTCULLIS_DATA_DIR: dataDir } });
    // Signatures pushed before the policy are judged again when it changes: wait until it is served.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const check = execFileSync(process.execPath, [MAIN, 'trust', 'check', `${enforced}:latest`], { env: { ...process.env, PORTCULLIS_DATA_DIR: dataDir } }).toString();
      if (/verdict\s+served \(valid signature/.test(check)) break;
      if (Date.now() > deadline) throw new Error(`the signed image was not judged valid in time:\n${check}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }

    const measure = async (repository: string, digest: string) => {
      const get = () => ops.getManifest(repository, 'latest', digest);
      await runFor(1, concurrency, get);
      const started = performance.now();
      const latencies = ascending(await runFor(seconds, concurrency, get));
      return { rate: latencies.length / ((performance.now() - started) / 1000), p99: percentile(latencies, 99) };
    };
    const lines: string[] = [];
    const ratios: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      const without = await measure(plain, plainDigest);
      const withPolicy = await measure(enforced, signedDigest);
      ratios.push(withPolicy.rate / without.rate);
      lines.push(
        `round ${round}: no policy ${without.rate.toFixed(0)} req/s (p99 ${without.p99.toFixed(1)} ms), ` +
          `enforce ${withPolicy.rate.toFixed(0)} req/s (p99 ${withPolicy.p99.toFixed(1)} ms): ${(100 * withPolicy.rate / without.rate).toFixed(1)} %`,
      );
    }
    const median = ascending(ratios)[Math.floor(ratios.length / 2)] ?? Number.NaN;
    lines.push(`median: enforce serves ${(100 * median).toFixed(1)} % of the no-policy rate (goal ≥ 90 %)`);
    client.close();
    return lines;
  } finally {
    await registry.stop();
  }
}

async function main(): Promise<void> {
  console.log(`Manifest GET by tag, ${concurrency} in flight, ${seconds} s per figure, ${rounds} alternating rounds`);
  for (const line of await manifestGetRates()) console.log(`  ${line}`);
  console.log(`Signatures verified per second, one at a time, ${verifySeconds} s per format`);
  for (const line of await verificationRates()) console.log(`  ${line}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
