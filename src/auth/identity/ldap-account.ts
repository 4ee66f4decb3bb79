// What a directory says about an account beyond "right or wrong password": Active Directory's bind
// diagnostics (`data 533` …) and account attributes (userAccountControl, pwdLastSet, …), and
// OpenLDAP's password policy (the ppolicy response control and pwdChangedTime, pwdReset, …).
//
// A reason is only ever told to the person logging in when the directory gave it after judging
// the password itself: AD and Samba answer 530/531/532/533/701/773 only for the right password
// (a wrong one gets `data 52e`), but `775` (locked) for any password, so telling "locked" would
// let anyone find out which names exist.
import { Control, ResultCodeError, type BerReader, type Entry } from 'ldapts';
import type { RefusalReason } from './provider.js';

/** Why a bind or an account is refused, and whether the person may be told (see above). */
export interface AccountVerdict {
  reason: RefusalReason;
  /** The directory judged the password right before refusing: the reason may be shown. */
  passwordVerified: boolean;
}

// ---------------------------------------------------------------------------------------------
// Active Directory bind diagnostics: "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 533, v1db1"

const AD_BIND_DATA: Record<string, AccountVerdict> = {
  '525': { reason: 'unknown_user', passwordVerified: false },
  '52e': { reason: 'wrong_password', passwordVerified: false },
  '530': { reason: 'restricted', passwordVerified: true }, // not permitted to log on at this time
  '531': { reason: 'restricted', passwordVerified: true }, // not permitted to log on at this workstation
  '532': { reason: 'password_expired', passwordVerified: true },
  '533': { reason: 'disabled', passwordVerified: true },
  '701': { reason: 'account_expired', passwordVerified: true },
  '773': { reason: 'must_change_password', passwordVerified: true },
  '775': { reason: 'locked', passwordVerified: false },
};

/** The AD sub-code of a refused bind ("data 533" → 533), lower-cased; undefined for other directories. */
export function adBindCode(message: string): string | undefined {
  return /\bdata ([0-9a-f]{3,4})\b/i.exec(message)?.[1]?.toLowerCase();
}

// ---------------------------------------------------------------------------------------------
// OpenLDAP password policy (draft-behera-ldap-password-policy): request control without a value,
// response control `SEQUENCE { warning [0] … OPTIONAL, error [1] ENUMERATED OPTIONAL }`.

const PPOLICY_OID = '1.3.6.1.4.1.42.2.27.8.5.1';
const PPOLICY_ERRORS: Record<number, AccountVerdict> = {
  0: { reason: 'password_expired', passwordVerified: true },
  1: { reason: 'locked', passwordVerified: false }, // slapo-ppolicy sends it for any password (ppolicy_use_lockout)
  2: { reason: 'must_change_password', passwordVerified: true },
};

/**
 * Sent with a user's bind. ldapts hands a response control whose OID it does not know to the
 * request control of the same OID, so this one object carries the answer back.
 */
export class PasswordPolicyControl extends Control {
  /** The response's error code, when the server sent one. */
  error: number | undefined;

  constructor() {
    super(PPOLICY_OID);
  }

  protected override parseControl(reader: BerReader): void {
    this.error = ppolicyError(reader.remainingBuffer);
  }

  verdict(): AccountVerdict | undefined {
    return this.error === undefined ? undefined : PPOLICY_ERRORS[this.error];
  }
}

/** One BER element: tag, and the content's start and end. Definite lengths only (as LDAP requires). */
function berElement(bytes: Buffer, at: number): { tag: number; start: number; end: number } | undefined {
  const tag = bytes[at];
  let length = bytes[at + 1];
  if (tag === undefined || length === undefined) return undefined;
  let start = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 3 || start + count > bytes.length) return undefined;
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (bytes[start + i] ?? 0);
    start += count;
  }
  const end = start + length;
  return end <= bytes.length ? { tag, start, end } : undefined;
}

/** The `error [1]` of a PasswordPolicyResponseValue, if present. */
export function ppolicyError(value: Buffer): number | undefined {
  const outer = berElement(value, 0);
  if (!outer || outer.tag !== 0x30) return undefined;
  for (let at = outer.start; at < outer.end; ) {
    const element = berElement(value, at);
    if (!element) return undefined;
    if (element.tag === 0x81 && element.end - element.start === 1) return value[element.start];
    at = element.end;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// A refused user bind

/** What a refused user bind means for the login; undefined when it is not the user's doing. */
export function bindRefusal(err: ResultCodeError, ppolicy: PasswordPolicyControl): AccountVerdict | undefined {
  const policy = ppolicy.verdict();
  if (policy) return policy;
  if (err.code !== 49) return undefined;
  const code = adBindCode(err.message);
  return (code && AD_BIND_DATA[code]) || { reason: 'wrong_password', passwordVerified: false };
}

// ---------------------------------------------------------------------------------------------
// Account state from the entry: read on every lookup (refresh tokens) and after every bind

/** Attributes that tell an account's state, on AD and on OpenLDAP with slapo-ppolicy. */
export const ACCOUNT_STATE_ATTRIBUTES = [
  'userAccountControl',
  'msDS-User-Account-Control-Computed',
  'lockoutTime',
  'pwdLastSet',
  'accountExpires',
  'pwdChangedTime',
  'pwdAccountLockedTime',
  'pwdReset',
];

const UF_ACCOUNTDISABLE = 0x2;
const UF_LOCKOUT = 0x10;
const UF_PASSWORD_EXPIRED = 0x800000;
/** FILETIME (100 ns since 1601-01-01) of the Unix epoch. */
const FILETIME_UNIX_EPOCH = 116444736000000000n;
const FILETIME_NEVER = 0x7fffffffffffffffn;
/** pwdAccountLockedTime of an account locked by an administrator until unlocked (slapo-ppolicy). */
const PPOLICY_LOCKED_FOREVER = '000001010000Z';

export interface AccountState {
  /** Why the account may not be used now, or undefined when it may. */
  blocked?: AccountVerdict['reason'];
  /** When the password was last set (ms since the epoch), if the directory says. */
  passwordChangedAt?: number;
}

type Values = (attribute: string) => string[];

function integer(values: string[]): bigint | undefined {
  const value = values[0];
  return value !== undefined && /^-?\d{1,20}$/.test(value) ? BigInt(value) : undefined;
}

/** AD FILETIME → ms since the epoch; undefined for 0 and "never". */
export function fileTimeToMs(value: bigint | undefined): number | undefined {
  if (value === undefined || value <= 0n || value >= FILETIME_NEVER) return undefined;
  return Number((value - FILETIME_UNIX_EPOCH) / 10000n);
}

/** LDAP GeneralizedTime (`20261130120000Z`, `20261130120000.123+0100`) → ms since the epoch. */
export function generalizedTimeToMs(value: string | undefined): number | undefined {
  const m = value && /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})?(\d{2})?(?:[.,](\d+))?(Z|[+-]\d{2}(?:\d{2})?)$/.exec(value);
  if (!m) return undefined;
  const [, y, mo, d, h, mi = '0', s = '0', fraction = '0', zone = 'Z'] = m;
  const ms = Math.round(Number(`0.${fraction}`) * 1000);
  const utc = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms);
  if (zone === 'Z') return utc;
  const sign = zone.startsWith('-') ? -1 : 1;
  const offset = (Number(zone.slice(1, 3)) * 60 + Number(zone.slice(3, 5) || '0')) * 60_000;
  return utc - sign * offset;
}

/** The account's state from its entry, whatever user.filter says; `now` for account expiry. */
export function accountState(values: Values, now = Date.now()): AccountState {
  const passwordChangedAt = passwordSetAt(values);
  const state: AccountState = passwordChangedAt === undefined ? {} : { passwordChangedAt };
  const blocked = blockedBy(values, now);
  return blocked ? { ...state, blocked } : state;
}

function passwordSetAt(values: Values): number | undefined {
  return fileTimeToMs(integer(values('pwdLastSet'))) ?? generalizedTimeToMs(values('pwdChangedTime')[0]);
}

function blockedBy(values: Values, now: number): AccountVerdict['reason'] | undefined {
  // Active Directory
  const control = integer(values('userAccountControl'));
  const computed = integer(values('msDS-User-Account-Control-Computed'));
  if (control !== undefined && (control & BigInt(UF_ACCOUNTDISABLE)) !== 0n) return 'disabled';
  if (computed !== undefined && (computed & BigInt(UF_LOCKOUT)) !== 0n) return 'locked';
  // lockoutTime stays set after a lockout ran out: trust it only where the computed flags are missing.
  if (computed === undefined && (integer(values('lockoutTime')) ?? 0n) > 0n) return 'locked';
  const expires = fileTimeToMs(integer(values('accountExpires')));
  if (expires !== undefined && expires <= now) return 'account_expired';
  if (integer(values('pwdLastSet')) === 0n) return 'must_change_password';
  if (computed !== undefined && (computed & BigInt(UF_PASSWORD_EXPIRED)) !== 0n) return 'password_expired';
  // OpenLDAP password policy
  const lockedAt = values('pwdAccountLockedTime')[0];
  if (lockedAt === PPOLICY_LOCKED_FOREVER) return 'disabled';
  if (lockedAt !== undefined) return 'locked';
  if (values('pwdReset')[0]?.toUpperCase() === 'TRUE') return 'must_change_password';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Active Directory primary group (primaryGroupID is a RID in the user's domain)

/** The SID of the user's primary group: the user's SID with its last sub-authority replaced. */
export function primaryGroupSid(userSid: Buffer, primaryGroupId: number): Buffer | undefined {
  // revision(1) count(1) authority(6) sub-authorities(4 each, little-endian); the last one is the RID.
  const count = userSid[1];
  if (userSid[0] !== 1 || count === undefined || count < 1 || userSid.length !== 8 + 4 * count) return undefined;
  if (!Number.isInteger(primaryGroupId) || primaryGroupId <= 0 || primaryGroupId > 0xffffffff) return undefined;
  const sid = Buffer.from(userSid);
  sid.writeUInt32LE(primaryGroupId, sid.length - 4);
  return sid;
}

/** The binary value of an attribute the search asked for as a Buffer. */
export function binaryValue(entry: Entry, attribute: string): Buffer | undefined {
  const wanted = attribute.toLowerCase();
  const key = Object.keys(entry).find((k) => k.toLowerCase() === wanted);
  const value = key === undefined ? undefined : entry[key];
  const first = Array.isArray(value) ? value[0] : value;
  return Buffer.isBuffer(first) ? first : undefined;
}
