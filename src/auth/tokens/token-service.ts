// Issues and verifies the registry's bearer tokens: ES256 JWTs in the shape distribution's
// "Token Authentication Implementation" describes (iss, sub, aud, exp, nbf, iat, jti and the
// private `access` claim), signed and checked only with our own keys.
//
// Verification trusts nothing in the token header except `kid`, and that only as an index into
// our own key set. Headers carrying key material or key locations (`jwk`, `jku`, `x5c`, `x5u`)
// are refused outright: distribution CVE-2025-24976 was a verifier that took an embedded JWK as
// long as its kid matched a trusted one. Only ES256 is accepted, so `alg: none` and HS256 signed
// with our public key as the HMAC secret go nowhere.
//
// Clock tolerance: 30 s on `exp` and `nbf`. Tokens are issued and checked by the same service,
// but several instances may run on hosts whose clocks differ by a few seconds.
import { randomBytes } from 'node:crypto';
import { SignJWT, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { RegistryError } from '../../registry/errors.js';
import { isTokenAction, isValidResource, mergeAccess, normalizeActions, type ResourceAccess, type ResourceType } from './access.js';
import { jwksOf, type Jwks, type SigningKey, type SigningKeys } from './keys.js';

export const DEFAULT_CLOCK_TOLERANCE_SECONDS = 30;
/** Node's default limit for all request headers together is 16 KiB; no real token is near it. */
const MAX_TOKEN_LENGTH = 16 * 1024;
/** The only header parameters our tokens carry; anything else marks a token we did not make. */
const ALLOWED_HEADER = new Set(['alg', 'typ', 'kid']);
const KEY_BEARING_HEADER = ['jwk', 'jku', 'x5c', 'x5u'];
const REQUIRED_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'access'];

export interface TokenServiceOptions {
  issuer: string;
  /** The audience: `auth.token.service`. */
  service: string;
  ttlSeconds: number;
  clockToleranceSeconds?: number;
  /** Verified tokens remembered (see `verify`); 0 turns the cache off. Default 1024. */
  cacheEntries?: number;
}

export interface IssueRequest {
  /** The user or robot name; `''` for an anonymous caller, as the spec asks. */
  subject: string;
  /** What the token grants: already the intersection of what was asked and what is allowed. */
  access: readonly ResourceAccess[];
  now?: Date;
}

export interface IssuedToken {
  token: string;
  /** Seconds from `issuedAt`; the token endpoint's `expires_in`. */
  expiresIn: number;
  /** RFC 3339 UTC, the token endpoint's `issued_at`. */
  issuedAt: string;
  /** The token's `jti`, for audit logs. */
  jti: string;
}

export interface VerifiedToken {
  subject: string;
  access: readonly ResourceAccess[];
  expiresAt: Date;
  issuedAt: Date;
  jti: string;
  /** Which key signed it. */
  kid: string;
}

export type InvalidTokenReason =
  | 'malformed'
  | 'header'
  | 'algorithm'
  | 'unknown_key'
  | 'signature'
  | 'issuer'
  | 'audience'
  | 'expired'
  | 'not_yet_valid'
  | 'claims';

/** 401 UNAUTHORIZED; `reason` is for logs and for `error="invalid_token"` challenges. */
export class InvalidTokenError extends RegistryError {
  constructor(
    readonly reason: InvalidTokenReason,
    message: string,
  ) {
    super('UNAUTHORIZED', message);
    this.name = 'InvalidTokenError';
  }
}

const invalid = (reason: InvalidTokenReason, message: string) => new InvalidTokenError(reason, message);

function epochSeconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

function rfc3339(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Checks one access entry as issued by us; undefined if it is not well formed. */
function accessEntry(value: unknown): ResourceAccess | undefined {
  if (!isRecord(value)) return undefined;
  const { type, name, actions } = value;
  if (typeof type !== 'string' || typeof name !== 'string' || !isValidResource(type, name)) return undefined;
  if (!Array.isArray(actions) || !actions.every((action) => typeof action === 'string' && isTokenAction(action))) return undefined;
  return { type: type as ResourceType, name, actions: normalizeActions(actions as string[]) };
}

function accessClaim(value: unknown): ResourceAccess[] {
  if (!Array.isArray(value)) throw invalid('claims', 'invalid token: malformed access claim');
  const entries: ResourceAccess[] = [];
  for (const item of value) {
    const entry = accessEntry(item);
    if (!entry) throw invalid('claims', 'invalid token: malformed access claim');
    entries.push(entry);
  }
  return mergeAccess(entries);
}

function freezeAccess(access: ResourceAccess[]): readonly ResourceAccess[] {
  // Shared by every cache hit; nobody may change it.
  for (const entry of access) {
    Object.freeze(entry.actions);
    Object.freeze(entry);
  }
  return Object.freeze(access);
}

/** Maps jose's failures to our reasons; other JOSE errors count as malformed, the rest are our bugs. */
function fromJose(error: unknown): InvalidTokenError {
  if (!(error instanceof joseErrors.JOSEError)) throw error;
  if (error instanceof joseErrors.JWTExpired) return invalid('expired', 'invalid token: expired');
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    // A missing or mistyped claim is malformed claims, not a wrong value.
    if (error.reason !== 'check_failed') return invalid('claims', `invalid token: ${error.claim} claim`);
    if (error.claim === 'iss') return invalid('issuer', 'invalid token: wrong issuer');
    if (error.claim === 'aud') return invalid('audience', 'invalid token: wrong audience');
    if (error.claim === 'nbf') return invalid('not_yet_valid', 'invalid token: not yet valid');
    return invalid('claims', `invalid token: ${error.claim} claim`);
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return invalid('signature', 'invalid token: bad signature');
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return invalid('algorithm', 'invalid token: algorithm not allowed');
  return invalid('malformed', 'invalid token: malformed');
}

interface CacheEntry {
  subject: string;
  access: readonly ResourceAccess[];
  iat: number;
  nbf: number;
  exp: number;
  jti: string;
  kid: string;
}

/** A new result object per call: Dates are mutable, the frozen access list is shared. */
function resultOf(entry: CacheEntry): VerifiedToken {
  return {
    subject: entry.subject,
    access: entry.access,
    expiresAt: new Date(entry.exp * 1000),
    issuedAt: new Date(entry.iat * 1000),
    jti: entry.jti,
    kid: entry.kid,
  };
}

export class TokenService {
  private current!: SigningKey;
  private byKid = new Map<string, SigningKey>();
  private keySet!: SigningKeys;
  private readonly tolerance: number;
  private readonly cacheEntries: number;
  // Verified tokens by their exact text. jose's ECDSA verify costs 120-170 µs on a 2-core Xeon
  // (WebCrypto, async); a hit costs ~1.5 µs. Safe because only tokens that passed every check get in, each is
  // re-checked against exp/nbf on every hit, the map is bounded (oldest out first) and is emptied
  // whenever the key set changes. Access tokens are not revocable, so nothing else can change.
  private readonly cache = new Map<string, CacheEntry>();

  constructor(
    keys: SigningKeys,
    private readonly options: TokenServiceOptions,
  ) {
    if (!Number.isInteger(options.ttlSeconds) || options.ttlSeconds < 1) throw new RangeError('ttlSeconds must be a positive integer');
    this.tolerance = options.clockToleranceSeconds ?? DEFAULT_CLOCK_TOLERANCE_SECONDS;
    this.cacheEntries = options.cacheEntries ?? 1024;
    this.useKeys(keys);
  }

  /** Switches to a new key set (after a rotation); drops every cached verification. */
  useKeys(keys: SigningKeys): void {
    this.keySet = keys;
    this.current = keys.current;
    this.byKid = new Map([keys.current, ...keys.previous].map((key) => [key.kid, key]));
    this.cache.clear();
  }

  get ttlSeconds(): number {
    return this.options.ttlSeconds;
  }

  /** The public keys for `/auth/jwks`. */
  jwks(): Jwks {
    return jwksOf(this.keySet);
  }

  async issue(request: IssueRequest): Promise<IssuedToken> {
    for (const entry of request.access) {
      // A programming error, not a client's: the token endpoint only passes parsed scopes.
      if (!isValidResource(entry.type, entry.name) || !entry.actions.every(isTokenAction)) {
        throw new TypeError(`cannot issue access to ${entry.type}:${entry.name}:${entry.actions.join(',')}`);
      }
    }
    const access = mergeAccess(request.access);
    const iat = epochSeconds(request.now ?? new Date());
    const jti = randomBytes(16).toString('base64url');
    const token = await new SignJWT({ access })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: this.current.kid })
      .setIssuer(this.options.issuer)
      .setSubject(request.subject)
      .setAudience(this.options.service)
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(iat + this.options.ttlSeconds)
      .setJti(jti)
      .sign(this.current.privateKey);
    return { token, expiresIn: this.options.ttlSeconds, issuedAt: rfc3339(iat), jti };
  }

  /** Verifies a bearer token; throws InvalidTokenError (401 UNAUTHORIZED) for anything amiss. */
  async verify(token: string, options: { now?: Date } = {}): Promise<VerifiedToken> {
    const now = options.now ?? new Date();
    const nowSeconds = epochSeconds(now);
    const cached = this.cache.get(token);
    if (cached) {
      if (cached.exp > nowSeconds - this.tolerance && cached.nbf <= nowSeconds + this.tolerance) return resultOf(cached);
      this.cache.delete(token); // expired: verify again below, which says why
    }

    if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH || token.split('.').length !== 3) {
      throw invalid('malformed', 'invalid token: malformed');
    }
    let header: Record<string, unknown>;
    try {
      header = decodeProtectedHeader(token) as Record<string, unknown>;
    } catch {
      throw invalid('malformed', 'invalid token: malformed');
    }
    // Before anything else: a token naming its own key is an attack, whatever else it says.
    if (KEY_BEARING_HEADER.some((name) => Object.hasOwn(header, name))) {
      throw invalid('header', 'invalid token: header carries key material');
    }
    if (header.alg !== 'ES256') throw invalid('algorithm', 'invalid token: algorithm not allowed');
    if (Object.keys(header).some((name) => !ALLOWED_HEADER.has(name)) || header.typ !== 'JWT') {
      throw invalid('header', 'invalid token: unexpected header');
    }
    const key = typeof header.kid === 'string' ? this.byKid.get(header.kid) : undefined;
    if (!key) throw invalid('unknown_key', 'invalid token: unknown signing key');

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key.publicKey, {
        algorithms: ['ES256'],
        typ: 'JWT',
        issuer: this.options.issuer,
        audience: this.options.service,
        clockTolerance: this.tolerance,
        requiredClaims: REQUIRED_CLAIMS,
        currentDate: now,
      }));
    } catch (error) {
      throw fromJose(error);
    }
    // jose checked presence, issuer, audience and times; the types below are ours to check.
    const { sub, jti, iat, exp, nbf, aud } = payload;
    if (typeof sub !== 'string' || typeof jti !== 'string' || typeof iat !== 'number' || typeof exp !== 'number' || typeof nbf !== 'number') {
      throw invalid('claims', 'invalid token: malformed claims');
    }
    // We only ever issue a single string audience; an array holding ours is not one of our tokens.
    if (aud !== this.options.service) throw invalid('audience', 'invalid token: wrong audience');
    const entry: CacheEntry = { subject: sub, access: freezeAccess(accessClaim(payload.access)), iat, nbf, exp, jti, kid: key.kid };
    this.remember(token, entry);
    return resultOf(entry);
  }

  private remember(token: string, entry: CacheEntry): void {
    if (this.cacheEntries <= 0) return;
    while (this.cache.size >= this.cacheEntries) {
      const oldest = this.cache.keys().next();
      if (oldest.done) break;
      this.cache.delete(oldest.value);
    }
    this.cache.set(token, entry);
  }
}
