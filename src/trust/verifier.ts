// The signature seam: each format (cosign keyed signatures, sigstore bundles, GPG simple signing)
// is a SignatureVerifier. A verifier judges one signature against the signers a trust policy
// names, bound to one manifest digest AND one repository; it never throws for a bad signature:
// a refusal is a result with its reason (stored, shown to auditors). It throws only for faults
// of its own (a bug, a trusted root that cannot be read).

export type SignatureFormat = 'cosign' | 'sigstore-bundle' | 'gpg';

/** One signer a trust policy accepts (from the policy file's `signers`). */
export type TrustedSigner =
  | { name: string; kind: 'gpg'; armoredPublicKey: string }
  /** keyed cosign signatures and keyed sigstore bundles */
  | { name: string; kind: 'cosign'; publicKeyPem: string }
  /** keyless sigstore bundles: the Fulcio certificate's OIDC issuer and subject (exact, or a glob with `*`) */
  | { name: string; kind: 'keyless'; issuer: string; subject: string };

/** What a signature must be about: this manifest, in this repository. */
export interface SignedSubject {
  repository: string;
  /** `sha256:<hex>` */
  manifestDigest: string;
}

export interface TrustContext {
  signers: readonly TrustedSigner[];
  /** The sigstore trusted root (trusted_root.json, parsed) for bundles; verification is offline. */
  trustedRoot?: unknown;
}

export interface VerificationResult {
  format: SignatureFormat;
  outcome: 'valid' | 'invalid';
  /** the trusted signer (its `name`) that verified the signature, when valid */
  signer?: string;
  /** who signed, as far as the signature says: a key fingerprint, or certificate subject + issuer */
  identity?: string;
  /** why it is valid or not, in words an auditor can read */
  reason: string;
}

export interface SignatureVerifier<Signature> {
  readonly format: SignatureFormat;
  verify(signature: Signature, subject: SignedSubject, trust: TrustContext): Promise<VerificationResult>;
}
