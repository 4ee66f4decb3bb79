// The seam for signatures kept beside the manifests they sign (the registry signature extension)
// and for the stored result of every signature verification, whatever the format. Records are
// plain values: what a signature means and how it is judged is trust/'s business.
//
// Everything hangs off one manifest in one repository: when that manifest is deleted, its
// signatures and results go with it.

/** Column widths of migrations/20261130_006_signatures.ts that callers check values against first. */
export const SIGNATURE_COLUMNS = { name: 300, signatureRef: 300, signer: 255, identity: 1024, format: 32 } as const;

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
   */
  addSignature(
    repository: string,
    manifestDigest: string,
    signature: NewSignature,
    verification: VerificationRecord,
    limit: number,
  ): Promise<AddSignatureOutcome>;

  /** Records (or replaces) the result for one signature; false when the manifest is gone. */
  recordVerification(repository: string, manifestDigest: string, verification: VerificationRecord): Promise<boolean>;

  /** The current results for a manifest, oldest signature first; empty when there are none or no manifest. */
  verificationsOf(repository: string, manifestDigest: string): Promise<VerificationRecord[]>;
}
