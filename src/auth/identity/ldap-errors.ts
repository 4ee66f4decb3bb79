// Failures that are the registry's configuration, not the person logging in: a service account
// the directory refuses, a base DN that does not exist, a certificate that does not fit. Each is
// named by the setting to fix, in one short line (a TLS error carries the whole peer certificate:
// it is never logged or passed on).
import { ResultCodeError } from 'ldapts';
import { ConfigError } from '../../config/config.js';
import { BackendUnavailableError } from '../../registry/errors.js';
import { adBindCode } from './ldap-account.js';

const BACKEND = 'LDAP directory';

/** A directory setting is wrong: the directory is unavailable to the client, the setting and the problem for the operator. */
export class DirectorySettingError extends BackendUnavailableError {
  constructor(
    readonly setting: string,
    readonly problem: string,
  ) {
    super(BACKEND, brief(`${setting}: ${problem}`));
    this.name = 'DirectorySettingError';
    // The client learns it is not their password, and whom to tell; the details are in the log.
    this.message = `${BACKEND} is unavailable: the registry's directory settings need fixing; tell the registry's administrator`;
    this.stack = `${this.name}: ${setting}: ${problem}`; // an expected condition: where it was thrown tells nothing
  }

  /** The same problem as a startup error. */
  toConfigError(): ConfigError {
    return new ConfigError(`${this.setting}: ${this.problem}`);
  }
}

const SERVICE_BIND_DATA: Record<string, string> = {
  '52e': 'wrong password (or no such account)',
  '525': 'no such account',
  '530': 'the account may not log on at this time',
  '531': 'the account may not log on from this computer',
  '532': 'the password has expired',
  '533': 'the account is disabled',
  '701': 'the account has expired',
  '773': 'the password must be changed first',
  '775': 'the account is locked out',
};

/** Why the directory refused the service account's bind. */
export function serviceBindFailure(err: ResultCodeError, bindDn: string | undefined): DirectorySettingError {
  if (err.code === 8 || err.code === 13) {
    return new DirectorySettingError('auth.ldap.url', 'the directory requires TLS for binds: use ldaps:// or set auth.ldap.startTls');
  }
  if (err.code === 49) {
    const code = adBindCode(err.message);
    const why = (code && SERVICE_BIND_DATA[code]) || 'invalid credentials';
    return new DirectorySettingError(
      'auth.ldap.bindDn',
      `the directory refused the service account ${JSON.stringify(bindDn ?? '')} (${why}); check auth.ldap.bindDn and auth.ldap.bindPassword`,
    );
  }
  return new DirectorySettingError('auth.ldap.bindDn', `the directory refused the service account's bind: ${firstLine(err.message)}`);
}

/** A search base that the directory does not hold (no such object, or a referral elsewhere). */
export function isMissingBase(err: unknown): boolean {
  return err instanceof ResultCodeError && (err.code === 32 || err.code === 10);
}

export function missingBase(setting: string, dn: string): DirectorySettingError {
  return new DirectorySettingError(setting, `${JSON.stringify(dn)} does not exist in the directory`);
}

interface TlsFailure extends Error {
  code?: string;
  host?: string;
  cert?: { subjectaltname?: string; subject?: { CN?: string | string[] }; valid_to?: string };
}

const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/** The names a certificate is valid for, as `DNS:a, IP:b` (or its CN when it has no SAN). */
function certificateNames(cert: TlsFailure['cert']): string {
  if (cert?.subjectaltname) return cert.subjectaltname.replace(/IP Address:/g, 'IP:');
  const cn = cert?.subject?.CN;
  return cn ? `CN=${Array.isArray(cn) ? cn.join(', ') : cn} (no subjectAltName)` : 'no names';
}

/** A certificate problem that a setting (or a new certificate) fixes; undefined for other failures. */
export function tlsFailure(err: unknown, url: string): DirectorySettingError | undefined {
  if (!(err instanceof Error)) return undefined;
  const { code, cert } = err as TlsFailure;
  const host = new URL(url).hostname.replace(/^\[(.*)\]$/, '$1');
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return new DirectorySettingError(
      'auth.ldap.url',
      `the directory's certificate does not name the host ${host} of the URL (it names ${certificateNames(cert)}); connect by one of those names or reissue the certificate`,
    );
  }
  if (code !== undefined && UNTRUSTED.has(code)) {
    return new DirectorySettingError(
      'auth.ldap.caFile',
      `the certificate of ${host} is not trusted (${code}); set auth.ldap.caFile to the CA that issued it`,
    );
  }
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') {
    return new DirectorySettingError('auth.ldap.url', `the certificate of ${host} is not valid now (${code}${cert?.valid_to ? `, valid to ${cert.valid_to}` : ''})`);
  }
  return undefined;
}

/** One line about a failure, whatever the error carries. */
function firstLine(text: string): string {
  const line = text.split('\n', 1)[0] ?? '';
  return line.length > 300 ? `${line.slice(0, 300)}…` : line;
}

export function errorText(err: unknown): string {
  return firstLine(err instanceof Error ? err.message : String(err));
}

/** An error that is just its message: a cause to show, not a place in the code. */
function brief(message: string): Error {
  const error = new Error(message);
  error.stack = `Error: ${message}`;
  return error;
}

/** A directory that cannot serve now: BackendUnavailableError, with a cause that is one line (never a certificate). */
export function unavailable(err: unknown): BackendUnavailableError {
  const code = err instanceof Error ? (err as TlsFailure).code : undefined;
  const failure = new BackendUnavailableError(BACKEND, brief(code ? `${code}: ${errorText(err)}` : errorText(err)));
  failure.stack = `${failure.name}: ${failure.message}`;
  return failure;
}
