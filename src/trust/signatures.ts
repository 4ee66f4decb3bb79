// Signatures through the registry signature extension (what `skopeo copy --sign-by` and
// `podman push --sign-by` use when /v2/ announces X-Registry-Supports-Signatures): each one sent
// is checked, verified against the signers the trust policy names for the repository, and stored
// together with the result. A signature that does not verify is still stored and served (a client
// judges signatures itself, and the result says why it failed); only malformed input is refused.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { auditRecord, type Author } from '../audit/events.js';
import type { AuditRecord } from '../metadata/auth-stores.js';
import type { SignatureStore, StoredSignature, VerificationRecord } from '../metadata/signature-store.js';
import { SIGNATURE_COLUMNS } from '../metadata/signature-store.js';
import { errors, RegistryError } from '../registry/errors.js';
import { parseDigest } from '../registry/reference.js';
import { GPG_SIGNATURE_MAX_BYTES, GpgVerifier, type GpgSignature } from './gpg.js';
import type { PolicyTrust } from './policy-digest.js';
import type { VerificationObserver } from './intake.js';
import type { SignatureVerifier, VerificationResult } from './verifier.js';

/** The extension's signature as it travels: `content` is the OpenPGP message in base64. */
export interface ExtensionSignature {
  schemaVersion: 2;
  name: string;
  type: 'atomic';
  content: string;
}

/** A signature sent with PUT, checked and decoded. */
export interface SignatureSubmission {
  name: string;
  content: Buffer;
}

/** What the trust policy says about a repository: whose signatures count there, and which policy that is. */
export type TrustSource = (repository: string) => Promise<PolicyTrust>;

/** Until trust policies exist, no repository has a trusted signer. */
export const NO_TRUST: TrustSource = async () => ({ signers: [] });

/** Signatures one manifest may carry: a key rotation or two and a few co-signers, not a dump. */
export const MAX_SIGNATURES_PER_MANIFEST = 16;

const SIGNATURE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const FIELDS = ['schemaVersion', 'name', 'type', 'content'];

const bad = (message: string, detail?: unknown): RegistryError => new RegistryError('REQUEST_INVALID', message, detail);

/** Longest reason kept with a result (a verifier's message may quote what it was given). */
const MAX_REASON = 1000;

/** A verifier's judgement of one signature as it is stored: which signature, and under which policy. */
export function verificationRecord(result: VerificationResult, signatureRef: string, trust: PolicyTrust): VerificationRecord {
  return {
    format: result.format,
    signatureRef,
    outcome: result.outcome,
    signer: result.signer?.slice(0, SIGNATURE_COLUMNS.signer),
    identity: result.identity?.slice(0, SIGNATURE_COLUMNS.identity),
    reason: result.reason.slice(0, MAX_REASON),
    verifiedAt: Date.now(),
    policyDigest: trust.policyDigest,
  };
}

/**
 * The audit events of a signature that arrived (pushed by `author`) and its result: written in
 * the transaction that stores them. `newDigest` is the manifest the signature is about.
 */
export function arrivalEvents(author: Author, repository: string, manifestDigest: string, record: VerificationRecord): AuditRecord[] {
  const who = { actor: author.actor, clientIp: author.clientIp, repository, newDigest: manifestDigest };
  return [
    auditRecord({ ...who, type: 'signature.stored', details: { format: record.format, signature: record.signatureRef } }),
    auditRecord({ ...who, type: 'signature.verified', ...verifiedEvent(record) }),
  ];
}

/** What a `signature.verified` event says about a result. */
export function verifiedEvent(record: VerificationRecord) {
  return {
    outcome: record.outcome === 'valid' ? ('success' as const) : ('failure' as const),
    reason: record.reason,
    details: {
      format: record.format,
      signature: record.signatureRef,
      ...(record.signer !== undefined ? { signer: record.signer } : {}),
      ...(record.identity !== undefined ? { identity: record.identity } : {}),
      policyDigest: record.policyDigest ?? null,
    },
  };
}

/**
 * Checks a PUT body (already parsed JSON) for the signature of `manifestDigest`: every field, its
 * grammar, and that its name speaks of the same manifest as the URL.
 */
export function parseSubmission(body: unknown, manifestDigest: string): SignatureSubmission {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw bad('the signature must be a JSON object');
  const fields = body as Record<string, unknown>;
  const unknown = Object.keys(fields).find((key) => !FIELDS.includes(key));
  if (unknown !== undefined) throw bad(`unknown field ${JSON.stringify(unknown.slice(0, 60))} in the signature; expected ${FIELDS.join(', ')}`);
  const { schemaVersion, name, type, content } = fields;
  if (schemaVersion !== 2) throw bad('schemaVersion must be 2');
  if (type !== 'atomic') throw bad('type must be "atomic" (GPG simple signing)');
  if (typeof name !== 'string') throw bad('name must be a string: <manifest digest>@<signature id>');
  if (typeof content !== 'string' || content.length === 0) throw bad('content must be the signature in base64');

  const at = name.lastIndexOf('@');
  const id = name.slice(at + 1);
  if (at < 0 || name.length > SIGNATURE_COLUMNS.name || !SIGNATURE_ID.test(id)) {
    throw bad('name must be <manifest digest>@<signature id>, the id of letters, digits, ".", "_" and "-" (at most 128)', { name: name.slice(0, 300) });
  }
  const named = parseDigest(name.slice(0, at)).value;
  if (named !== manifestDigest) {
    throw errors.digestInvalid({ name: name.slice(0, 300), digest: manifestDigest }, `the signature's name is for ${named}, but it was sent for ${manifestDigest}`);
  }

  if (!BASE64.test(content)) throw bad('content is not base64 (standard alphabet, with padding)');
  const bytes = Buffer.from(content, 'base64');
  if (bytes.length > GPG_SIGNATURE_MAX_BYTES) {
    throw new RegistryError('SIZE_INVALID', `the signature is larger than ${GPG_SIGNATURE_MAX_BYTES} bytes`, { size: bytes.length });
  }
  return { name, content: bytes };
}

export const toExtensionSignature = (signature: StoredSignature): ExtensionSignature => ({
  schemaVersion: 2,
  name: signature.name,
  type: 'atomic',
  content: signature.content.toString('base64'),
});

export interface SignatureServiceOptions {
  store: SignatureStore;
  log: Logger;
  /** whose signatures count, per repository; default NO_TRUST */
  trust?: TrustSource;
  verifier?: SignatureVerifier<GpgSignature>;
  maxPerManifest?: number;
}

export interface SignatureReport {
  signatures: { format: 'gpg'; name: string; contentDigest: string; createdAt: number }[];
  verifications: VerificationRecord[];
}

export interface StoredOutcome {
  /** false when the same signature was already stored for the manifest (nothing changed) */
  added: boolean;
  /** the result stored with it (for a duplicate: the current result, if any) */
  verification?: VerificationRecord;
}

export class SignatureService {
  private readonly store: SignatureStore;
  private readonly log: Logger;
  private readonly trust: TrustSource;
  private readonly verifier: SignatureVerifier<GpgSignature>;
  private readonly maxPerManifest: number;

  private observer: VerificationObserver | undefined;

  /** Reports every signature stored through the extension, with its outcome, from now on. */
  observe(observer: VerificationObserver): void {
    this.observer = observer;
  }

  constructor(options: SignatureServiceOptions) {
    this.store = options.store;
    this.log = options.log;
    this.trust = options.trust ?? NO_TRUST;
    this.verifier = options.verifier ?? new GpgVerifier();
    this.maxPerManifest = options.maxPerManifest ?? MAX_SIGNATURES_PER_MANIFEST;
  }

  /** A manifest's signatures in the extension's form, oldest first; none for an unknown manifest. */
  async list(repository: string, manifestDigest: string): Promise<ExtensionSignature[]> {
    return ((await this.store.signaturesOf(repository, manifestDigest)) ?? []).map(toExtensionSignature);
  }

  /**
   * Verifies and stores one signature of a manifest that exists in the repository, sent by
   * `author` (recorded in the audit log with it). The cheap refusals (no such manifest, a taken
   * name, the limit) come before any cryptography; the store checks them again in the
   * transaction that writes.
   */
  async add(repository: string, manifestDigest: string, submission: SignatureSubmission, author: Author): Promise<StoredOutcome> {
    const contentDigest = `sha256:${createHash('sha256').update(submission.content).digest('hex')}`;
    const present = await this.store.signaturesOf(repository, manifestDigest);
    if (present === undefined) throw errors.manifestUnknown(manifestDigest);
    if (present.some((signature) => signature.contentDigest === contentDigest)) return this.duplicate(repository, manifestDigest, present, contentDigest);
    if (present.some((signature) => signature.name === submission.name)) throw nameTaken(submission.name);
    if (present.length >= this.maxPerManifest) throw limitReached(this.maxPerManifest);

    const verification = await this.judge(repository, manifestDigest, submission, await this.trust(repository));
    const outcome = await this.store.addSignature(
      repository,
      manifestDigest,
      { name: submission.name, content: submission.content, contentDigest },
      verification,
      this.maxPerManifest,
      arrivalEvents(author, repository, manifestDigest, verification),
    );
    switch (outcome.status) {
      case 'added':
        this.observer?.('gpg', verification.outcome);
        this.log.info(
          { repository, digest: manifestDigest, signature: submission.name, outcome: verification.outcome, identity: verification.identity, reason: verification.reason },
          'signature stored',
        );
        return { added: true, verification };
      case 'duplicate':
        return this.duplicate(repository, manifestDigest, (await this.store.signaturesOf(repository, manifestDigest)) ?? [], contentDigest);
      case 'manifest-unknown':
        throw errors.manifestUnknown(manifestDigest);
      case 'name-taken':
        throw nameTaken(submission.name);
      case 'limit-reached':
        throw limitReached(outcome.limit);
    }
  }

  /**
   * For auditors: a manifest's signatures (without their bytes) and the stored result of every
   * verification, of any format; undefined when the repository holds no such manifest.
   */
  async describe(repository: string, manifestDigest: string): Promise<SignatureReport | undefined> {
    const stored = await this.store.signaturesOf(repository, manifestDigest);
    if (stored === undefined) return undefined;
    return {
      signatures: stored.map(({ name, contentDigest, createdAt }) => ({ format: 'gpg', name, contentDigest, createdAt })),
      verifications: await this.store.verificationsOf(repository, manifestDigest),
    };
  }

  /** The stored results for a manifest (for auditors, and for enforcement later). */
  verifications(repository: string, manifestDigest: string): Promise<VerificationRecord[]> {
    return this.store.verificationsOf(repository, manifestDigest);
  }

  /**
   * Judges a stored signature again, from its stored bytes, against `trust` (the keys or the
   * policy changed). Nothing is written: the caller replaces the stale result.
   */
  async judgeStored(repository: string, manifestDigest: string, name: string, trust: PolicyTrust): Promise<VerificationRecord> {
    const signature = (await this.store.signaturesOf(repository, manifestDigest))?.find((stored) => stored.name === name);
    if (!signature) return verificationRecord({ format: 'gpg', outcome: 'invalid', reason: 'the signature is no longer stored' }, name, trust);
    return this.judge(repository, manifestDigest, signature, trust);
  }

  private async duplicate(repository: string, manifestDigest: string, present: StoredSignature[], contentDigest: string): Promise<StoredOutcome> {
    const name = present.find((signature) => signature.contentDigest === contentDigest)?.name;
    const verification = (await this.store.verificationsOf(repository, manifestDigest)).find((record) => record.format === 'gpg' && record.signatureRef === name);
    return verification ? { added: false, verification } : { added: false };
  }

  /**
   * The verifier's result as stored. A fault of the verifier is logged and stored as a failed
   * verification. (The policy's signers are read before, outside this fault net: a database that
   * cannot answer fails the request, 503.)
   */
  private async judge(repository: string, manifestDigest: string, submission: SignatureSubmission, trust: PolicyTrust): Promise<VerificationRecord> {
    let result: VerificationResult;
    try {
      result = await this.verifier.verify({ message: submission.content }, { repository, manifestDigest }, trust);
    } catch (error) {
      this.log.error({ err: error, repository, digest: manifestDigest }, 'signature verification failed');
      result = { format: 'gpg', outcome: 'invalid', reason: `the signature could not be verified: ${(error as Error).message}` };
    }
    return verificationRecord(result, submission.name, trust);
  }
}

const nameTaken = (name: string): RegistryError =>
  new RegistryError('DENIED', 'another signature with this name is already stored; signatures are never replaced', { name });

const limitReached = (limit: number): RegistryError =>
  new RegistryError('DENIED', `the manifest already has ${limit} signatures, the most it may carry`, { limit });
