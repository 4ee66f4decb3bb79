// Assembles token auth from the configuration: identity providers, access policy, robots,
// refresh tokens and the token service. The HTTP layer builds its routes on these.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { AuditLog } from '../audit/events.js';
import type { Config } from '../config/config.js';
import { KnexAuthStores } from '../metadata/knex-auth-stores.js';
import { Authenticator } from './authenticator.js';
import { LdapIdentityProvider } from './identity/ldap.js';
import { LocalUsers } from './identity/local.js';
import { generateSecret } from './identity/passwords.js';
import { LoginThrottle, throttleOptions } from './login-throttle.js';
import { AccessPolicy } from './policy/access-policy.js';
import { allowedActions, pullNamespaces } from './policy/rules.js';
import { AccessRuleStore } from './policy/store.js';
import { RefreshTokens } from './refresh-tokens.js';
import { ConsoleSessions } from './console-sessions.js';
import { RobotAccounts } from './robots.js';
import { jwksOf, loadSigningKeys } from './tokens/keys.js';
import { TokenService } from './tokens/token-service.js';

/** Token auth, ready to serve: who people are, what they may do, and the tokens that say so. */
export interface Auth extends Identities {
  tokens: TokenService;
  refreshTokens: RefreshTokens;
  /** web console sign-ins (refresh tokens of the console's lifetime, in a cookie) */
  consoleSessions: ConsoleSessions;
  /** the token audience clients ask for */
  service: string;
  /** the token endpoint announced in challenges */
  realm: string;
  /** Where the principal behind a token subject may pull, for the catalog. */
  pullScope(subject: string): Promise<PullScope>;
  /**
   * Creates the bootstrap administrator on a fresh database. Called once the server listens, so a
   * start that fails earlier (a port in use) never prints a password that is then lost.
   */
  bootstrap(): Promise<void>;
}

/** The repositories a principal may pull: name prefixes to look under, and the test for each name. */
export interface PullScope {
  namespaces: readonly string[] | 'everything';
  visible(repository: string): boolean;
}

export const BOOTSTRAP_ADMIN = 'admin';

/**
 * Creates the `admin` user at the first start of a fresh database: with the configured password,
 * or a generated one printed once. Never again afterwards, even when every local user is gone.
 */
async function bootstrapAdmin(users: LocalUsers, config: Config, log: Logger): Promise<void> {
  const password = config.adminPassword ?? generateSecret();
  const outcome = await users.bootstrap(BOOTSTRAP_ADMIN, password);
  if (outcome !== 'created') {
    if ((await users.count()) === 0) {
      log.warn('there are no local users; add an administrator with `portcullis user add NAME --admin`');
    }
    return;
  }
  if (config.adminPassword) {
    log.info({ user: BOOTSTRAP_ADMIN }, 'created the bootstrap administrator with the configured password');
  } else {
    // On stderr, outside the JSON log stream, so log shipping does not carry it.
    process.stderr.write(
      `\nportcullis: created the bootstrap administrator "${BOOTSTRAP_ADMIN}" with password:\n\n    ${password}\n\n` +
        'It is shown only this once. Change it with `portcullis user passwd admin`.\n\n',
    );
  }
}

export interface Identities {
  users: LocalUsers;
  directory?: LdapIdentityProvider | undefined;
  robots: RobotAccounts;
  audit: AuditLog;
  rules: AccessRuleStore;
  policy: AccessPolicy;
  authenticator: Authenticator;
  close(): Promise<void>;
}

/** Who people are and what rules apply to them: shared by the server and the CLI. */
export function createIdentities(config: Config, db: Knex, log: Logger): Identities {
  const stores = new KnexAuthStores(db);
  const users = new LocalUsers(stores);
  const directory = config.auth.ldap ? new LdapIdentityProvider(config.auth.ldap, log) : undefined;
  const robots = new RobotAccounts(stores);
  const audit = new AuditLog(stores, log);
  const rules = new AccessRuleStore(stores);
  const policy = new AccessPolicy(rules, config.auth.rulesCacheSeconds * 1000);
  const authenticator = new Authenticator({
    local: users,
    directory,
    robots,
    // The counts live in the metadata database, shared by every replica (see login-throttle.ts).
    throttle: new LoginThrottle({ db, driver: config.metadata.driver }, throttleOptions(config.auth.loginThrottle)),
    audit,
    adminGroups: config.auth.adminGroups,
    log,
  });
  return {
    users,
    directory,
    robots,
    audit,
    rules,
    policy,
    authenticator,
    async close() {
      await audit.flush();
      await directory?.close();
    },
  };
}

export async function createAuth(config: Config, db: Knex, log: Logger): Promise<Auth> {
  const identities = createIdentities(config, db, log);
  const { users, policy, authenticator } = identities;
  const refreshTokens = new RefreshTokens(new KnexAuthStores(db), config.auth.refreshTokenTtlSeconds * 1000);
  const consoleSessions = new ConsoleSessions(new RefreshTokens(new KnexAuthStores(db), config.console.sessionSeconds * 1000, 'console'), authenticator);
  const keySource = { keyFile: config.auth.token.keyFile, dataDir: config.dataDir };
  const keys = await loadSigningKeys(keySource);
  log.info({ kid: keys.current.kid, source: keys.source }, 'token signing key loaded');
  const { service, issuer, ttlSeconds, realm } = config.auth.token;
  const tokens = new TokenService(keys, { issuer, service, ttlSeconds });
  // Pick up a rotation made by the CLI or another replica: new tokens get the new key, and
  // tokens signed by the previous one keep verifying until they expire.
  const reload = setInterval(() => {
    loadSigningKeys(keySource).then(
      (fresh) => {
        if (JSON.stringify(jwksOf(fresh)) === JSON.stringify(tokens.jwks())) return;
        tokens.useKeys(fresh);
        log.info({ kid: fresh.current.kid }, 'token signing keys reloaded');
      },
      (error: unknown) => log.warn({ err: error }, 'could not reload token signing keys'),
    );
  }, config.auth.token.keyReloadSeconds * 1000);
  reload.unref();

  return {
    ...identities,
    tokens,
    refreshTokens,
    consoleSessions,
    service,
    realm,
    async pullScope(subject) {
      const principal = (await authenticator.resolve(subject)) ?? { kind: 'anonymous' as const };
      const current = await policy.rules();
      return {
        namespaces: pullNamespaces(current, principal),
        visible: (repository) => allowedActions(current, principal, repository).has('pull'),
      };
    },
    bootstrap: () => bootstrapAdmin(users, config, log),
    async close() {
      clearInterval(reload);
      await identities.close();
    },
  };
}
