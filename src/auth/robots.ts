// Robot accounts for CI: a name, a generated secret shown once (stored as a digest), an optional
// expiry, revocation. They log in as `robot$<name>` and get exactly what rules for
// `robot:<name>` grant.
import type { Knex } from 'knex';
import { newSecret, secretDigest, secretMatches } from './secrets.js';

export const ROBOT_PREFIX = 'robot$';
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Column widths of `robot_accounts` (migrations/20261126_002_auth.ts), checked before any write. */
export const MAX_DESCRIPTION_LENGTH = 512;
const MAX_CREATED_BY_LENGTH = 255;

// Free text may hold tabs and line breaks; other control characters (NUL above all, which
// PostgreSQL refuses in text) may not.
const FORBIDDEN_IN_TEXT = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;

export function isValidRobotName(name: string): boolean {
  return NAME.test(name);
}

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
    validateRobot(name, createdBy, options);
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
    // One statement decides, so two administrators creating the same name at once get one robot
    // and one 409 (a check-then-insert would let the second fail on the key instead).
    const inserted = (await this.db('robot_accounts').insert(row).onConflict('name').ignore().returning('name')) as unknown[];
    if (inserted.length === 0) throw new RobotError(`robot ${name} already exists`, 'exists');
    return { robot: toRobot(row), secret };
  }

  async list(): Promise<RobotAccount[]> {
    return ((await this.db('robot_accounts').orderBy('name')) as RobotRow[]).map(toRobot);
  }

  async get(name: string): Promise<RobotAccount | undefined> {
    if (!NAME.test(name)) return undefined;
    const row = (await this.db('robot_accounts').where({ name }).first()) as RobotRow | undefined;
    return row && toRobot(row);
  }

  async revoke(name: string): Promise<void> {
    // A name no robot can have is not looked up (PostgreSQL refuses NUL even in a comparison).
    if (!NAME.test(name)) throw new RobotError(`no active robot ${JSON.stringify(name.slice(0, 80))}`, 'missing');
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
    if (!NAME.test(name)) return false;
    const row = (await this.db('robot_accounts').where({ name }).first()) as RobotRow | undefined;
    return row !== undefined && isActive(row);
  }
}

/** Everything `create` stores, checked against the grammar and the columns before the database sees it. */
function validateRobot(name: string, createdBy: string, options: { description?: string; expiresAt?: number }): void {
  if (!NAME.test(name)) throw new RobotError(`invalid robot name ${JSON.stringify(name.slice(0, 80))}: 1-64 of a-z 0-9 . _ -, starting with a letter or digit`, 'invalid');
  const { description, expiresAt } = options;
  if (description !== undefined) {
    if (description.length > MAX_DESCRIPTION_LENGTH) throw new RobotError(`description is longer than ${MAX_DESCRIPTION_LENGTH} characters`, 'invalid');
    if (FORBIDDEN_IN_TEXT.test(description)) throw new RobotError('description contains a control character (only tabs and line breaks are allowed)', 'invalid');
  }
  if (expiresAt !== undefined && (!Number.isSafeInteger(expiresAt) || expiresAt <= Date.now())) throw new RobotError('expiry must be in the future', 'invalid');
  // The creator is the administrator's own name; a directory could hand out a longer one.
  if (createdBy.length > MAX_CREATED_BY_LENGTH || FORBIDDEN_IN_TEXT.test(createdBy)) {
    throw new RobotError(`the creating administrator's name cannot be recorded (more than ${MAX_CREATED_BY_LENGTH} characters or control characters)`, 'invalid');
  }
}

function isActive(row: RobotRow): boolean {
  return row.revoked_at === null && (row.expires_at === null || Number(row.expires_at) > Date.now());
}
