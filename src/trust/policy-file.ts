// The trust policy file used by `portcullis trust apply` / `trust export`:
//
//   policies:
//     - repositories: prod/**            # the access rules' glob syntax
//       immutableTags: ["v*"]            # tag globs; "*" = every tag
//       signatures:
//         mode: enforce                  # enforce | audit | off
//         signers:                       # any one valid signature from these satisfies the policy
//           - name: release-gpg
//             gpg: keys/release.asc      # armored public key
//           - name: release-cosign
//             cosign: keys/cosign.pub    # PEM public key (keyed cosign and keyed bundles)
//           - name: ci-keyless
//             keyless: { issuer: "https://issuer.example", subject: "https://ci.example/acme/*" }
//         trustedRoot: sigstore/trusted_root.json   # needed for keyless and bundles
//
// File paths are relative to the file. Applied policies carry the keys and the trusted root
// themselves (the servers need no files), and `export` writes them inline: an inline value is
// accepted wherever a path is.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { SIGNATURE_MODES, validatePattern, validateTagGlob, type SignatureMode, type TrustPolicy } from './policy.js';
import type { TrustedSigner } from './verifier.js';

export interface FieldProblem {
  /** where, as `policies[0].signatures.mode` */
  key: string;
  detail: string;
}

export class TrustPolicyError extends Error {
  constructor(
    message: string,
    readonly problems: readonly FieldProblem[] = [],
  ) {
    super(message);
    this.name = 'TrustPolicyError';
  }
}

/** Reads a referenced file (a key, a trusted root), or undefined when the value is inline. */
export type MaterialReader = (value: string) => string | undefined;

const MAX_PROBLEMS = 20;
const SIGNER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAX_MATERIAL = 256 * 1024;

export function parseTrustFile(path: string): TrustPolicy[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new TrustPolicyError(`cannot read ${path}: ${(error as Error).message}`);
  }
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new TrustPolicyError(`${path} is not valid YAML: ${(error as Error).message}`);
  }
  const base = dirname(resolve(path));
  return parseTrustDocument(document, path, (value) => (looksInline(value) ? undefined : readFileSync(resolve(base, value), 'utf8')));
}

/** An armored key, a PEM key or a JSON document written in place rather than a path. */
function looksInline(value: string): boolean {
  return value.includes('-----BEGIN') || value.trimStart().startsWith('{');
}

/**
 * Reads `{ policies: [...] }`, reporting every invalid field (up to a limit) by its key. `read`
 * turns a path into the file's text; without it (the admin API) only inline values are accepted.
 */
export function parseTrustDocument(document: unknown, source: string, read?: MaterialReader): TrustPolicy[] {
  const problems: FieldProblem[] = [];
  const policies = isRecord(document) ? document.policies : undefined;
  if (!Array.isArray(policies)) throw trustError(source, [{ key: 'policies', detail: 'expected a top-level "policies:" list' }]);
  const parsed = policies.map((entry, index) => collectPolicy(entry, `policies[${index}]`, problems, read));
  const seen = new Set<string>();
  parsed.forEach((policy, index) => {
    if (!policy) return;
    if (seen.has(policy.repositories)) problems.push({ key: `policies[${index}].repositories`, detail: `${policy.repositories} has a policy already` });
    seen.add(policy.repositories);
  });
  if (problems.length > 0) throw trustError(source, problems);
  return parsed.filter((policy): policy is TrustPolicy => policy !== undefined);
}

function trustError(source: string, problems: FieldProblem[]): TrustPolicyError {
  const shown = problems.slice(0, MAX_PROBLEMS);
  const more = problems.length > shown.length ? `\n${source}: … and ${problems.length - shown.length} more` : '';
  return new TrustPolicyError(shown.map((problem) => `${source}: ${problem.key}: ${problem.detail}`).join('\n') + more, shown);
}

function collectPolicy(entry: unknown, key: string, problems: FieldProblem[], read?: MaterialReader): TrustPolicy | undefined {
  if (!isRecord(entry)) {
    problems.push({ key, detail: 'must be a mapping of repositories, immutableTags and signatures' });
    return undefined;
  }
  const before = problems.length;
  unknownKeys(entry, ['repositories', 'immutableTags', 'signatures'], key, problems);
  const repositories = field(problems, `${key}.repositories`, () => validatePattern(text(entry.repositories, 'a repository pattern')));
  const immutableTags = field(problems, `${key}.immutableTags`, () => {
    if (entry.immutableTags === undefined) return [];
    if (!Array.isArray(entry.immutableTags)) throw new Error('must be a list of tag globs');
    return entry.immutableTags.map((glob) => validateTagGlob(text(glob, 'a tag glob')));
  });
  const signatures = collectSignatures(entry.signatures, `${key}.signatures`, problems, read);
  if (problems.length > before || repositories === undefined || immutableTags === undefined || !signatures) return undefined;
  return { repositories, immutableTags, signatures };
}

function collectSignatures(value: unknown, key: string, problems: FieldProblem[], read?: MaterialReader): TrustPolicy['signatures'] | undefined {
  if (value === undefined) return { mode: 'off', signers: [] };
  if (!isRecord(value)) {
    problems.push({ key, detail: 'must be a mapping of mode, signers and trustedRoot' });
    return undefined;
  }
  const before = problems.length;
  unknownKeys(value, ['mode', 'signers', 'trustedRoot'], key, problems);
  const mode = field(problems, `${key}.mode`, () => {
    const mode = value.mode ?? 'off';
    if (!(SIGNATURE_MODES as readonly unknown[]).includes(mode)) throw new Error(`must be one of ${SIGNATURE_MODES.join(', ')}`);
    return mode as SignatureMode;
  });
  const list = value.signers ?? [];
  if (!Array.isArray(list)) problems.push({ key: `${key}.signers`, detail: 'must be a list of signers' });
  const signers = (Array.isArray(list) ? list : []).map((signer, index) => collectSigner(signer, `${key}.signers[${index}]`, problems, read));
  const trustedRoot =
    value.trustedRoot === undefined
      ? undefined
      : field(problems, `${key}.trustedRoot`, () => {
          const root = isRecord(value.trustedRoot) ? value.trustedRoot : JSON.parse(material(text(value.trustedRoot, 'a path to trusted_root.json'), read)) as unknown;
          if (!isRecord(root)) throw new Error('is not a trusted root (a JSON object)');
          return root;
        });
  if (mode === 'enforce' && signers.length === 0) problems.push({ key: `${key}.signers`, detail: 'enforce needs at least one signer' });
  const needsRoot = signers.some((signer) => signer?.kind === 'keyless');
  if (needsRoot && value.trustedRoot === undefined) problems.push({ key: `${key}.trustedRoot`, detail: 'keyless signers need a trustedRoot' });
  const names = signers.filter((signer): signer is TrustedSigner => signer !== undefined).map((signer) => signer.name);
  names.forEach((name, index) => {
    if (names.indexOf(name) !== index) problems.push({ key: `${key}.signers`, detail: `signer name ${name} is used twice` });
  });
  if (problems.length > before || mode === undefined) return undefined;
  return { mode, signers: signers as TrustedSigner[], ...(trustedRoot !== undefined ? { trustedRoot } : {}) };
}

function collectSigner(value: unknown, key: string, problems: FieldProblem[], read?: MaterialReader): TrustedSigner | undefined {
  if (!isRecord(value)) {
    problems.push({ key, detail: 'must be a mapping with a name and one of gpg, cosign or keyless' });
    return undefined;
  }
  unknownKeys(value, ['name', 'gpg', 'cosign', 'keyless'], key, problems);
  const name = field(problems, `${key}.name`, () => {
    const name = text(value.name, 'a name');
    if (!SIGNER_NAME.test(name)) throw new Error('1-64 of letters, digits, . _ -, starting with a letter or digit');
    return name;
  });
  const kinds = (['gpg', 'cosign', 'keyless'] as const).filter((kind) => value[kind] !== undefined);
  if (kinds.length !== 1) {
    problems.push({ key, detail: 'needs exactly one of gpg, cosign or keyless' });
    return undefined;
  }
  const kind = kinds[0] as 'gpg' | 'cosign' | 'keyless';
  if (name === undefined) return undefined;
  if (kind === 'keyless') {
    const identity = value.keyless;
    if (!isRecord(identity)) {
      problems.push({ key: `${key}.keyless`, detail: 'must be a mapping of issuer and subject' });
      return undefined;
    }
    unknownKeys(identity, ['issuer', 'subject'], `${key}.keyless`, problems);
    const issuer = field(problems, `${key}.keyless.issuer`, () => text(identity.issuer, 'the OIDC issuer URL'));
    const subject = field(problems, `${key}.keyless.subject`, () => text(identity.subject, 'the certificate subject (exact, or a glob with *)'));
    return issuer !== undefined && subject !== undefined ? { name, kind, issuer, subject } : undefined;
  }
  const materialKey = `${key}.${kind}`;
  const content = field(problems, materialKey, () => material(text(value[kind], kind === 'gpg' ? 'an armored public key or a path to one' : 'a PEM public key or a path to one'), read));
  if (content === undefined) return undefined;
  if (kind === 'gpg') {
    if (!content.includes('-----BEGIN PGP PUBLIC KEY BLOCK-----')) {
      problems.push({ key: materialKey, detail: 'is not an armored OpenPGP public key' });
      return undefined;
    }
    return { name, kind, armoredPublicKey: content };
  }
  if (!content.includes('-----BEGIN PUBLIC KEY-----')) {
    problems.push({ key: materialKey, detail: 'is not a PEM public key (-----BEGIN PUBLIC KEY-----)' });
    return undefined;
  }
  return { name, kind, publicKeyPem: content };
}

/** The value itself when inline, else the file it names (only where files may be read). */
function material(value: string, read?: MaterialReader): string {
  const content = read?.(value) ?? (looksInline(value) ? value : undefined);
  if (content === undefined) throw new Error(`${JSON.stringify(value.slice(0, 80))}: write the key or document inline (files are read only from a policy file)`);
  if (content.length > MAX_MATERIAL) throw new Error(`is larger than ${MAX_MATERIAL} bytes`);
  return content;
}

function text(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.trim() === '') throw new Error(`must be ${what}`);
  return value.trim();
}

function field<T>(problems: FieldProblem[], key: string, read: () => T): T | undefined {
  try {
    return read();
  } catch (error) {
    const message = (error as Error).message.replace(/^invalid repository pattern /, '');
    problems.push({ key, detail: message });
    return undefined;
  }
}

function unknownKeys(value: Record<string, unknown>, known: string[], key: string, problems: FieldProblem[]): void {
  for (const name of Object.keys(value)) if (!known.includes(name)) problems.push({ key: `${key}.${name.slice(0, 40)}`, detail: 'is not a known key' });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The policies as a file `trust apply` takes back, keys and trusted roots written inline. */
export function formatTrustFile(policies: readonly TrustPolicy[]): string {
  const document = {
    policies: policies.map((policy) => ({
      repositories: policy.repositories,
      ...(policy.immutableTags.length > 0 ? { immutableTags: policy.immutableTags } : {}),
      signatures: {
        mode: policy.signatures.mode,
        signers: policy.signatures.signers.map((signer) =>
          signer.kind === 'gpg'
            ? { name: signer.name, gpg: signer.armoredPublicKey }
            : signer.kind === 'cosign'
              ? { name: signer.name, cosign: signer.publicKeyPem }
              : { name: signer.name, keyless: { issuer: signer.issuer, subject: signer.subject } },
        ),
        ...(policy.signatures.trustedRoot !== undefined ? { trustedRoot: JSON.stringify(policy.signatures.trustedRoot) } : {}),
      },
    })),
  };
  return stringify(document, { lineWidth: 0 });
}
