// Registries on each metadata backend whose database can be made to refuse audit events of one
// type (a trigger, standing for a full disk or a lost privilege: no client value can make a
// sanitised event unstorable), for tests that a change and its audit event commit together.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { createTestDatabase, postgresEnv, type TestDatabase } from './postgres.js';
import { CLI, startPortcullis, type RunningRegistry } from './server.js';

export interface Backend {
  name: 'SQLite' | 'PostgreSQL';
  start(env?: Record<string, string>): Promise<{
    server: RunningRegistry;
    /** Environment for a CLI command on the server's database. */
    cliEnv: Record<string, string>;
    refuse(type: string): Promise<() => Promise<void>>;
    stop(): Promise<void>;
  }>;
}

// The test is the trusted proxy, so it can say which client address a request came from.
// Behind a proxy the token realm must be configured; this test asks for tokens directly.
export const TRUSTING_LOOPBACK = { PORTCULLIS_HTTP_TRUST_PROXY: '127.0.0.1', PORTCULLIS_AUTH_TOKEN_REALM: 'https://registry.example.org/auth/token' };

export const BACKENDS: Backend[] = [
  {
    name: 'SQLite',
    async start(env = {}) {
      const server = await startPortcullis({ env: { ...TRUSTING_LOOPBACK, ...env } });
      const path = join(server.dataDir, 'portcullis.db');
      const exec = (sql: string) => {
        const db = new Database(path, { timeout: 10_000 });
        try {
          db.exec(sql);
        } finally {
          db.close();
        }
      };
      return {
        server,
        cliEnv: { PORTCULLIS_DATA_DIR: server.dataDir },
        async refuse(type) {
          exec(`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events WHEN NEW.type = '${type}' BEGIN SELECT RAISE(ABORT, 'audit event refused'); END`);
          return async () => exec('DROP TRIGGER refuse_audit');
        },
        stop: () => server.stop(),
      };
    },
  },
  {
    name: 'PostgreSQL',
    async start(env = {}) {
      const database: TestDatabase = await createTestDatabase();
      const server = await startPortcullis({ env: { ...postgresEnv(database), ...TRUSTING_LOOPBACK, ...env } });
      return {
        server,
        cliEnv: postgresEnv(database),
        async refuse(type) {
          await database.query(`CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit event refused'; END $$`);
          await database.query(`CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events FOR EACH ROW WHEN (NEW.type = '${type}') EXECUTE FUNCTION refuse_audit()`);
          return async () => {
            await database.query('DROP TRIGGER refuse_audit ON audit_events');
            await database.query('DROP FUNCTION refuse_audit()');
          };
        },
        async stop() {
          await server.stop();
          await database.drop();
        },
      };
    },
  },
];

/** Runs the CLI with a password on stdin; resolves with its exit code and output. */
export function cli(env: Record<string, string>, args: string[], stdin = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    child.stdin?.end(stdin);
  });
}

