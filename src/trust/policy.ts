// Trust policies: per repository pattern, which tags are immutable and whose signatures an image
// must carry. The most specific matching policy applies (the longest literal prefix); a repository
// no policy matches has no requirements.
import { matchesRepository, validatePattern } from '../auth/policy/rules.js';
import type { TrustedSigner } from './verifier.js';

export const SIGNATURE_MODES = ['enforce', 'audit', 'off'] as const;
export type SignatureMode = (typeof SIGNATURE_MODES)[number];

export interface TrustPolicy {
  /** the access rules' glob syntax: `*` one segment, `**` any number */
  repositories: string;
  /** tag globs (`*` any characters, `?` one); `*` alone protects every tag */
  immutableTags: string[];
  signatures: {
    mode: SignatureMode;
    /** any one valid signature from these satisfies the policy */
    signers: TrustedSigner[];
    /** sigstore trusted_root.json (parsed), for keyless signers and bundles */
    trustedRoot?: unknown;
  };
}

/** A tag glob: what a tag may contain, plus `*` and `?`. */
const TAG_GLOB = /^[A-Za-z0-9_.*?-]{1,128}$/;

export function validateTagGlob(glob: string): string {
  if (!TAG_GLOB.test(glob)) throw new Error(`invalid tag glob ${JSON.stringify(glob.slice(0, 80))}: tag characters, * and ? only`);
  return glob;
}

export { validatePattern };

/** Whether a tag matches a glob; linear in the tag (no backtracking regular expression). */
export function tagMatches(glob: string, tag: string): boolean {
  let g = 0;
  let t = 0;
  let star = -1;
  let resume = 0;
  while (t < tag.length) {
    if (g < glob.length && (glob[g] === '?' || glob[g] === tag[t])) {
      g++;
      t++;
    } else if (g < glob.length && glob[g] === '*') {
      star = g++;
      resume = t;
    } else if (star >= 0) {
      g = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (g < glob.length && glob[g] === '*') g++;
  return g === glob.length;
}

/** How specific a pattern is: the length of its literal segments before the first wildcard. */
function specificity(pattern: string): number {
  let length = 0;
  for (const segment of pattern.split('/')) {
    if (segment === '*' || segment === '**') break;
    length += segment.length + 1;
  }
  return length;
}

/** The policy that applies to a repository: the matching one with the longest literal prefix. */
export function policyFor<P extends Pick<TrustPolicy, 'repositories'>>(policies: readonly P[], repository: string): P | undefined {
  let best: P | undefined;
  for (const policy of policies) {
    if (!matchesRepository(policy.repositories, repository)) continue;
    if (!best || specificity(policy.repositories) > specificity(best.repositories)) best = policy;
  }
  return best;
}

export function isImmutableTag(policy: Pick<TrustPolicy, 'immutableTags'>, tag: string): boolean {
  return policy.immutableTags.some((glob) => tagMatches(glob, tag));
}
