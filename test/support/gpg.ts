// GPG keys for signature tests, made with the real gpg in a temp GNUPGHOME (so the machine's own
// keyrings are never read or written), and GPG "simple signing" signatures made by skopeo itself
// (`skopeo standalone-sign`: the same code path as `skopeo copy --sign-by`).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureCommands } from './packages.js';
import { run } from './run.js';

/** Commands these helpers run, for ensureCommands(). */
export const GPG_COMMANDS = { gpg: 'gpg', 'gpg-agent': 'gpg-agent', gpgconf: 'gpgconf', skopeo: 'skopeo' } as const;

export interface GpgKey {
  /** the GNUPGHOME holding the secret key */
  home: string;
  /** environment for gpg, skopeo and podman to sign with this key */
  env: { GNUPGHOME: string };
  /** the primary key's fingerprint, upper-case hex */
  fingerprint: string;
  armoredPublicKey: string;
  /** the public key as a binary keyring file (what policy.json's keyPath wants) */
  publicKeyring: string;
  /** stops the gpg-agent that signing started in this home */
  close(): Promise<void>;
}

/** A fresh signing key without a passphrase, in `dir` (created, mode 0700 as gpg insists). */
export async function createGpgKey(dir: string, userId: string): Promise<GpgKey> {
  await ensureCommands(GPG_COMMANDS);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const env = { GNUPGHOME: dir };
  await run('gpg', ['--batch', '--passphrase', '', '--quick-gen-key', userId, 'default', 'default', 'never'], { env });
  const { stdout } = await run('gpg', ['--batch', '--with-colons', '--list-secret-keys'], { env });
  const fingerprint = /^fpr:(?::[^:]*){7}:([0-9A-F]{40}):/m.exec(stdout)?.[1];
  if (!fingerprint) throw new Error(`gpg listed no fingerprint for the new key:\n${stdout}`);
  const armoredPublicKey = (await run('gpg', ['--batch', '--armor', '--export', fingerprint], { env })).stdout;
  const publicKeyring = join(dir, 'public-key.gpg');
  await run('gpg', ['--batch', '--yes', '--output', publicKeyring, '--export', fingerprint], { env });
  return {
    home: dir,
    env,
    fingerprint,
    armoredPublicKey,
    publicKeyring,
    async close() {
      await run('gpgconf', ['--kill', 'gpg-agent'], { env });
    },
  };
}

/** The secret key, armored, for tests that craft OpenPGP messages themselves (openpgp.js). */
export async function exportSecretKey(key: GpgKey): Promise<string> {
  const args = ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--armor', '--export-secret-keys', key.fingerprint];
  return (await run('gpg', args, { env: key.env })).stdout;
}

/** A simple signing signature by `key` of `manifest` (its bytes) for `dockerReference` (HOST/REPO[:TAG]). */
export async function standaloneSign(key: GpgKey, manifest: Buffer | string, dockerReference: string, workDir: string): Promise<Buffer> {
  const manifestFile = join(workDir, `manifest-${process.hrtime.bigint()}.json`);
  const output = `${manifestFile}.sig`;
  await writeFile(manifestFile, manifest);
  await run('skopeo', ['standalone-sign', manifestFile, dockerReference, key.fingerprint, '--output', output], { env: key.env });
  return readFile(output);
}
