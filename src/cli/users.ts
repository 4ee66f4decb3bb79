// portcullis user add | passwd | rm | list — manage local users in the metadata database.
import type { Command } from 'commander';
import { LocalUsers } from '../auth/identity/local.js';
import { generateSecret } from '../auth/identity/passwords.js';
import { RefreshTokens } from '../auth/refresh-tokens.js';
import { AuditLog, CLI_ACTOR } from '../audit/events.js';
import { createLogger } from '../log.js';
import { KnexAuthStores } from '../metadata/knex-auth-stores.js';
import { openExistingDatabase, requireExistingDatabase } from './database.js';
import type { CliSettings, LoadSettings } from './settings.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

async function withUsers<T>(settings: CliSettings, work: (users: LocalUsers, refreshTokens: RefreshTokens, audit: AuditLog) => Promise<T>): Promise<T> {
  const db = await openExistingDatabase(settings);
  const stores = new KnexAuthStores(db);
  try {
    return await work(new LocalUsers(stores), new RefreshTokens(stores, 0), new AuditLog(stores, createLogger('warn')));
  } finally {
    await db.destroy();
  }
}

/** The password from stdin when asked, else a generated one that is printed once. */
async function passwordFor(options: { passwordStdin?: boolean }): Promise<{ password: string; generated: boolean }> {
  if (options.passwordStdin) return { password: await readStdin(), generated: false };
  return { password: generateSecret(), generated: true };
}

export function registerUserCommands(program: Command, settings: LoadSettings): void {
  const user = program.command('user').description('manage local users');

  user
    .command('add <username>')
    .description('create a local user (password from stdin with --password-stdin, else generated and printed once)')
    .option('--admin', 'make the user an administrator')
    .option('--password-stdin', 'read the password from standard input')
    .action(async (username: string, options: { admin?: boolean; passwordStdin?: boolean }) => {
      const loaded = settings(); // a wrong configuration is reported before a password is read
      requireExistingDatabase(loaded);
      const { password, generated } = await passwordFor(options);
      const admin = options.admin ?? false;
      await withUsers(loaded, (users, _refreshTokens, audit) =>
        audit.transaction(async (tx) => {
          await users.add(username, password, { admin }, tx);
          await audit.record({ type: 'user.created', ...CLI_ACTOR, details: { user: username, admin } }, tx);
        }),
      );
      console.log(generated ? `created ${username}; password (shown once): ${password}` : `created ${username}`);
    });

  user
    .command('passwd <username>')
    .description("set a local user's password (from stdin with --password-stdin, else generated and printed once)")
    .option('--password-stdin', 'read the password from standard input')
    .action(async (username: string, options: { passwordStdin?: boolean }) => {
      const loaded = settings();
      requireExistingDatabase(loaded);
      const { password, generated } = await passwordFor(options);
      // A new password ends the sessions the old one opened.
      await withUsers(loaded, (users, refreshTokens, audit) =>
        audit.transaction(async (tx) => {
          await users.setPassword(username, password, tx);
          const revoked = await refreshTokens.revokeAll('user', username, tx);
          await audit.record({ type: 'user.password_changed', ...CLI_ACTOR, details: { user: username, refreshTokensRevoked: revoked } }, tx);
        }),
      );
      console.log(generated ? `password of ${username} changed; new password (shown once): ${password}` : `password of ${username} changed`);
    });

  user
    .command('rm <username>')
    .description('delete a local user (never the last local administrator)')
    .action(async (username: string) => {
      // Its refresh tokens go too: a later user of the same name must not inherit them.
      await withUsers(settings(), (users, refreshTokens, audit) =>
        audit.transaction(async (tx) => {
          await users.remove(username, tx);
          const revoked = await refreshTokens.revokeAll('user', username, tx);
          await audit.record({ type: 'user.removed', ...CLI_ACTOR, details: { user: username, refreshTokensRevoked: revoked } }, tx);
        }),
      );
      console.log(`deleted ${username}`);
    });

  user
    .command('list')
    .description('list local users')
    .action(async () => {
      const all = await withUsers(settings(), (users) => users.list());
      for (const entry of all) console.log(`${entry.username}${entry.admin ? ' (admin)' : ''}`);
    });
}
