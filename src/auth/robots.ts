// Robot accounts for CI: a name, a generated secret shown once (stored as a digest), an optional
// expiry, revocation. They log in as `robot$<name>` and get exactly what rules for
// `robot:<name>` grant.
import type { Knex } from 'knex';
import { newSecret, secretDigest, secretMatches } from './secrets.js';

export const ROBOT_PREFIX = 'robot$';
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export interface RobotAccount {
  name: string;
  description?: string;
  createdBy: string;
  createdAt: number;
  expiresAt?: number;
  revokedAt?: number;
}

interface RobotRow {
  name: string;
  secret_hash: string;
  description: string | null;
  created_by: string;
  created_at: number | string;
  expires_at: number | string | null;
  revoked_at: number | string | null;
}

export class RobotError extends Error {
  constructor(
    message: string,
    readonly kind: 'invalid' | 'exists' | 'missing',
  ) {
    super(message);
    this.name = 'RobotError';
  }
}

const toRobot = (row: RobotRow): RobotAccount => ({
  name: row.name,
  ...(row.description ? { description: row.description } : {}),
  createdBy: row.created_by,
  createdAt: Number(row.created_at),
  ...(row.expires_at !== null ? { expiresAt: Number(row.expires_at) } : {}),
  ...(row.revoked_at !== null ? { revokedAt: Number(row.revoked_at) } : {}),
});

export class RobotAccounts {
  constructor(private readonly db: Knex) {}

  /** Creates a robot and returns its secret; the secret is not stored and cannot be shown again. */
  async create(name: string, createdBy: string, options: { description?: string; expiresAt?: number } = {}): Promise<{ robot: RobotAccount; secret: string }> {
    if (!NAME.test(name)) throw new RobotError(`invalid robot name ${JSON.stringify(name)}: 1-64 of a-z 0-9 . _ -`, 'invalid');
    if (options.expiresAt !== undefined && options.expiresAt <= Date.now()) throw new RobotError('expiry must be in the future', 'invalid');
    const secret = newSecret();
    const row = {
      name,
      secret_hash: secretDigest(secret),
      description: options.description ?? null,
      created_by: createdBy,
      created_at: Date.now(),
      expires_at: options.expiresAt ?? null,
      revoked_at: null,
    };
    await this.db.transaction(async (trx) => {
      if (await trx('robot_accounts').where({ name }).first('name')) throw new RobotError(`robot ${name} already exists`, 'exists');
      await trx('robot_accounts').insert(row);
    });
    return { robot: toRobot(row), secret };
  }

  async list(): Promise<RobotAccount[]> {
    return ((await this.db('robot_accounts').orderBy('name')) as RobotRow[]).map(toRobot);
  }

  async get(name: string): Promise<RobotAccount | undefined> {
    const row = (await this.db('robot_accounts').where({ name }).first()) as RobotRow | undefined;
    return row && toRobot(row);
  }

  async revoke(name: string): Promise<void> {
    const updated = await this.db('robot_accounts').where({ name }).whereNull('revoked_at').update({ revoked_at: Date.now() });
    if (updated === 0) throw new RobotError(`no active robot ${name}`, 'missing');
  }

  /** The robot's name when the secret is right and the robot is neither revoked nor expired. */
  async authenticate(login: string, secret: string): Promise<string | undefined> {
    if (!login.startsWith(ROBOT_PREFIX) || secret.length === 0) return undefined;
    const name = login.slice(ROBOT_PREFIX.length);
    if (!NAME.test(name)) return undefined;
    const row = (await this.db('robot_accounts').where({ name }).first()) as RobotRow | undefined;
    if (!row || !secretMatches(secret, row.secret_hash)) return undefined;
    return isActive(row) ? name : undefined;
  }

  /** Whether a robot may still act (refresh tokens re-check this). */
  async isActive(name: string): Promise<boolean> {
    const row = (await this.db('robot_accounts').where({ name }).first()) as RobotRow | undefined;
    return row !== undefined && isActive(row);
  }
}

function isActive(row: RobotRow): boolean {
  return row.revoked_at === null && (row.expires_at === null || Number(row.expires_at) > Date.now());
}
