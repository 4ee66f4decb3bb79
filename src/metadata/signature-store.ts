// The seam for signatures kept beside the manifests they sign (the registry signature extension)
// and for the stored result of every signature verification, whatever the format. Records are
// plain values: what a signature means and how it is judged is trust/'s business.
//
// Everything hangs off one manifest in one repository: when that manifest is deleted, its
// signatures and results go with it. A write that records a signature or a result appends the
// audit events its caller made for it last in its own transaction: both commit, or neither.
import type { AuditRecord } from './auth-stores.js';

/** Column widths of migrations/20261130_006_signatures.ts that callers check values against first. */
export const SIGNATURE_COLUMNS = { name: 300, signatureRef: 300, signer: 255, identity: 1024, format: 32, policyDigest: 71 } as const;

export interface StoredSignature {
  /** the client's `<digest>@<id>` */
  name: string;
  content: Buffer;
  /** sha256 of content, `sha256:<hex>` */
  contentDigest: string;
  createdAt: number;
}

export type NewSignature = Omit<StoredSignature, 'createdAt'>;

export interface VerificationRecord {
  /** the format's name (gpg, cosign, sigstore-bundle) */
  format: string;
  /** which signature of that format the result is about (for GPG, the signature's name) */
  signatureRef: string;
  outcome: 'valid' | 'invalid';
  signer?: string | undefined;
  identity?: string | undefined;
  reason: string;
  verifiedAt: number;
  /**
   * `sha256:<hex>` of the trust policy the signature was judged under; absent when no policy
   * applied. A result counts only while that policy is the one in force.
   */
  policyDigest?: string | undefined;
}

/** A stored result and where it lives: what judging it again needs, and what replacing it checks. */
export interface StoredVerification {
  id: number;
  repository: string;
  /** the manifest the signature is about */
  manifestDigest: string;
  record: VerificationRecord;
}

/** A repository holding results, and the policies they were judged under (undefined: none). */
export interface JudgedRepository {
  repository: string;
  policyDigests: (string | undefined)[];
}

export type AddSignatureOutcome =
  | { status: 'added' }
  /** the same bytes were already stored for this manifest (under any name): nothing changed */
  | { status: 'duplicate' }
  | { status: 'manifest-unknown' }
  /** another signature already has this name: signatures are never replaced */
  | { status: 'name-taken' }
  | { status: 'limit-reached'; limit: number };

export interface SignatureStore {
  /**
   * A manifest's signatures, oldest first; undefined when the repository holds no manifest with
   * that digest.
   */
  signaturesOf(repository: string, manifestDigest: string): Promise<StoredSignature[] | undefined>;

  /**
   * Adds a signature and the result of verifying it, in one transaction: both are stored, or
   * neither. The manifest's existence, the name, the content and the limit are checked inside
   * that transaction, so concurrent writers and a concurrent delete cannot slip between.
   * `auditEvents` are appended last in it when (and only when) the signature is added.
   */
  addSignature(
    repository: string,
    manifestDigest: string,
    signature: NewSignature,
    verification: VerificationRecord,
    limit: number,
    auditEvents?: readonly AuditRecord[],
  ): Promise<AddSignatureOutcome>;

  /**
   * Records (or replaces) the result for one signature, with `auditEvents` appended last in the
   * same transaction; false (nothing written) when the manifest is gone.
   */
  recordVerification(repository: string, manifestDigest: string, verification: VerificationRecord, auditEvents?: readonly AuditRecord[]): Promise<boolean>;

  /** The current results for a manifest, oldest signature first; empty when there are none or no manifest. */
  verificationsOf(repository: string, manifestDigest: string): Promise<VerificationRecord[]>;

  /** A manifest's bytes (a cosign `.sig` manifest, a bundle referrer), to judge its signature again. */
  manifestPayload(repository: string, manifestDigest: string): Promise<Buffer | undefined>;

  /**
   * The next `limit` repositories (by name, after `after`) that hold results, each with the
   * policies its results were judged under: which ones are stale is the trust layer's call.
   */
  judgedRepositories(after: string | undefined, limit: number): Promise<JudgedRepository[]>;

  /**
   * A repository's results NOT judged under `policyDigest` (undefined: under no policy), with ids
   * above `afterId`, in id order, at most `limit`.
   */
  staleVerifications(repository: string, policyDigest: string | undefined, afterId: number, limit: number): Promise<StoredVerification[]>;

  /**
   * Replaces a stale result with its new judgement, with `auditEvents` appended last in the same
   * transaction, unless the result changed since `stale` was read (judged again by another
   * replica, or by a signature arriving again) or is gone with its manifest: false then, and
   * nothing is written. Several replicas judging the same result write it, and its event, once.
   */
  replaceVerification(stale: StoredVerification, verification: VerificationRecord, auditEvents?: readonly AuditRecord[]): Promise<boolean>;
}
