// The identity seam: who is this, and which groups are they in. What those groups may do is
// decided elsewhere (the access policy), so each side can be tested alone.
import type { HashMeter } from './passwords.js';

export interface Group {
  /** Distinguished name, for directory groups. */
  dn?: string;
  /** Short name (the group's cn, or a local group name). */
  name: string;
}

export interface Identity {
  /**
   * The canonical user name, the token subject: a local user's name, or a directory user's
   * user.usernameAttribute value however the name was typed (ALICE, CORP\alice, alice@corp…).
   */
  username: string;
  provider: 'local' | 'ldap';
  /** Directory DN of the user, when there is one. */
  dn?: string;
  /** Direct and (where configured) nested groups, read fresh from the source: never merged with older results. */
  groups: Group[];
  /** Local administrators. Directory users become administrators through access rules on their groups. */
  admin?: boolean;
  /** When the directory says the password was last set (ms since the epoch): older refresh tokens end. */
  passwordChangedAt?: number;
}

export interface IdentityProvider {
  readonly name: string;
  /**
   * Checks a username and password. Resolves undefined for wrong credentials (including an
   * empty password, refused before any bind); throws BackendUnavailableError when the source
   * cannot be reached. `meter` learns whether a local password hash was computed.
   */
  authenticate(username: string, password: string, meter?: HashMeter): Promise<Identity | undefined>;
  /** Reads a user's current groups without a password (refresh tokens); undefined when the user is gone. */
  lookup(username: string): Promise<Identity | undefined>;
  close(): Promise<void>;
}

/**
 * Why a login was refused, for the audit log (`login.failure` details.reason). Only a few are
 * ever shown to the person, and only when the directory judged the password right first.
 */
export type RefusalReason =
  | 'unknown_user'
  | 'wrong_password'
  | 'invalid_credentials' // empty password, unusable name: refused before any check
  | 'disabled'
  | 'locked'
  | 'account_expired'
  | 'password_expired'
  | 'must_change_password'
  | 'restricted' // AD logon hours or workstations
  | 'name_reserved' // a directory account spelled like a local user or a robot
  | 'throttled';

export interface LoginRefusal {
  reason: RefusalReason;
  /** What the person can do about it; set only when it is safe to tell (the password was right). */
  advice?: string;
  /** The account the typed name resolved to, when the directory found one (shares the throttle). */
  account?: string;
}

export type LoginOutcome = { identity: Identity; refusal?: undefined } | { identity?: undefined; refusal: LoginRefusal };

export interface LoginHooks {
  /**
   * Called once the typed name resolved to an account and before its password is tried;
   * returning false refuses the login without trying it (that account is being throttled).
   */
  mayTry?(account: string): boolean | Promise<boolean>;
}

/** A directory: logins say why they were refused, and it can be checked at startup and for /readyz. */
export interface DirectoryProvider extends IdentityProvider {
  login(username: string, password: string, hooks?: LoginHooks): Promise<LoginOutcome>;
  /** Service bind and base DN lookups: throws ConfigError naming the setting, or BackendUnavailableError. */
  probe(): Promise<void>;
  /** A cheap check that the directory answers with the configured service account. */
  checkHealth(): Promise<void>;
}
