// Certificate identities (a keyless signer's `subject`) matched exactly or by a glob, with the
// access rules' meaning of the stars: `*` is any run of characters within one `/`-separated
// segment, `**` any run at all. So `https://ci.example/acme/*` names the pipelines directly under
// acme and nothing below or beside it; there is no other special character and no escaping.

type Token = { kind: 'literal'; text: string } | { kind: 'segment' } | { kind: 'any' };

function tokenize(pattern: string): Token[] {
  const tokens: Token[] = [];
  for (const part of pattern.split(/(\*\*|\*)/)) {
    if (part === '**') tokens.push({ kind: 'any' });
    else if (part === '*') tokens.push({ kind: 'segment' });
    else if (part !== '') tokens.push({ kind: 'literal', text: part });
  }
  return tokens;
}

export function isIdentityPattern(subject: string): boolean {
  return subject.includes('*');
}

/**
 * Whether `identity` matches `pattern` (exactly, when it has no `*`). A table of reachable
 * positions, not backtracking: no pattern can make it take exponential time.
 */
export function matchesIdentity(pattern: string, identity: string): boolean {
  if (!isIdentityPattern(pattern)) return pattern === identity;
  const tokens = tokenize(pattern);
  // reachable[i]: the tokens so far can consume exactly identity[0, i)
  let reachable = new Array<boolean>(identity.length + 1).fill(false);
  reachable[0] = true;
  for (const token of tokens) {
    const next = new Array<boolean>(identity.length + 1).fill(false);
    for (let start = 0; start <= identity.length; start += 1) {
      if (!reachable[start]) continue;
      if (token.kind === 'literal') {
        if (identity.startsWith(token.text, start)) next[start + token.text.length] = true;
        continue;
      }
      // A star consumes any run from `start`; `*` stops before the first `/`.
      for (let end = start; end <= identity.length; end += 1) {
        next[end] = true;
        if (end < identity.length && token.kind === 'segment' && identity[end] === '/') break;
      }
    }
    reachable = next;
  }
  return reachable[identity.length] === true;
}
