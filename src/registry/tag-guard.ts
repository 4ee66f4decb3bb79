// Which tags may not move or go: the registry asks, the trust layer answers (from its policies).
// Defined here so the registry depends on the question, not on who answers it.

/** The protection that applies to one repository's tags. */
export interface TagProtection {
  /** the policy that protects them, named in every refusal (e.g. its repository pattern) */
  policy: string;
  isImmutable(tag: string): boolean;
}

export interface TagGuard {
  /** The protection for a repository's tags; undefined when none applies. */
  protection(repository: string): Promise<TagProtection | undefined>;
}

/** No tag is protected: the guard of a registry without trust policies. */
export const NO_TAG_PROTECTION: TagGuard = { protection: async () => undefined };
