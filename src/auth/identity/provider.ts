// The identity seam: who is this, and which groups are they in. What those groups may do is
// decided elsewhere (the access policy), so each side can be tested alone.

export interface Group {
  /** Distinguished name, for directory groups. */
  dn?: string;
  /** Short name (the group's cn, or a local group name). */
  name: string;
}

export interface Identity {
  /** The user name as the client typed it, normalised by the provider (e.g. the directory's uid). */
  username: string;
  provider: 'local' | 'ldap';
  /** Directory DN of the user, when there is one. */
  dn?: string;
  /** Direct and (where configured) nested groups, read fresh from the source: never merged with older results. */
  groups: Group[];
  /** Local administrators. Directory users become administrators through access rules on their groups. */
  admin?: boolean;
}

export interface IdentityProvider {
  readonly name: string;
  /**
   * Checks a username and password. Resolves undefined for wrong credentials (including an
   * empty password, refused before any bind); throws BackendUnavailableError when the source
   * cannot be reached.
   */
  authenticate(username: string, password: string): Promise<Identity | undefined>;
  /** Reads a user's current groups without a password (refresh tokens); undefined when the user is gone. */
  lookup(username: string): Promise<Identity | undefined>;
  close(): Promise<void>;
}
