// Robot accounts for CI: a name, a generated secret shown once (stored as a digest), an optional
// expiry, revocation. They log in as `robot$<name>` and get exactly what rules for
// `robot:<name>` grant.
import { ROBOT_COLUMNS, type AuthStores, type RobotRecord } from '../metadata/auth-stores.js';
import { newSecret, secretDigest, secretMatches } from './secrets.js';

export const ROBOT_PREFIX = 'robot$';
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** Column widths of `robot_accounts`, checked before any write. */
export const MAX_DESCRIPTION_LENGTH = ROBOT_COLUMNS.description;
const MAX_CREATED_BY_LENGTH = ROBOT_COLUMNS.createdBy;

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

export class RobotError extends Error {
  constructor(
    message: string,
    readonly kind: 'invalid' | 'exists' | 'missing',
  ) {
    super(message);
    this.name = 'RobotError';
  }
}

/** What a robot looks like to administrators: everything but the secret's digest. */
const toRobot = (record: RobotRecord): RobotAccount => ({
  name: record.name,
  ...(record.description ? { description: record.description } : {}),
  createdBy: record.createdBy,
  createdAt: record.createdAt,
  ...(record.expiresAt !== undefined ? { expiresAt: record.expiresAt } : {}),
  ...(record.revokedAt !== undefined ? { revokedAt: record.revokedAt } : {}),
});

export class RobotAccounts {
  constructor(private readonly stores: AuthStores) {}

  /**
   * Creates a robot and returns its secret; the secret is not stored and cannot be shown again.
   * With `tx`, as part of that transaction (with the robot's rules and the audit event, say).
   */
  async create(
    name: string,
    createdBy: string,
    options: { description?: string; expiresAt?: number } = {},
    tx?: AuthStores,
  ): Promise<{ robot: RobotAccount; secret: string }> {
    validateRobot(name, createdBy, options);
    const secret = newSecret();
    const record: RobotRecord = {
      name,
      secretHash: secretDigest(secret),
      description: options.description,
      createdBy,
      createdAt: Date.now(),
      expiresAt: options.expiresAt,
    };
    // One statement decides, so two administrators creating the same name at once get one robot
    // and one 409 (a check-then-insert would let the second fail on the key instead).
    if (!(await (tx ?? this.stores).robots.insert(record))) throw new RobotError(`robot ${name} already exists`, 'exists');
    return { robot: toRobot(record), secret };
  }

  async list(): Promise<RobotAccount[]> {
    return (await this.stores.robots.list()).map(toRobot);
  }

  async get(name: string): Promise<RobotAccount | undefined> {
    if (!NAME.test(name)) return undefined;
    const record = await this.stores.robots.get(name);
    return record && toRobot(record);
  }

  async revoke(name: string, tx?: AuthStores): Promise<void> {
    // A name no robot can have is not looked up (PostgreSQL refuses NUL even in a comparison).
    if (!NAME.test(name)) throw new RobotError(`no active robot ${JSON.stringify(name.slice(0, 80))}`, 'missing');
    if (!(await (tx ?? this.stores).robots.revoke(name))) throw new RobotError(`no active robot ${name}`, 'missing');
  }

  /** The robot's name when the secret is right and the robot is neither revoked nor expired. */
  async authenticate(login: string, secret: string): Promise<string | undefined> {
    if (!login.startsWith(ROBOT_PREFIX) || secret.length === 0) return undefined;
    const name = login.slice(ROBOT_PREFIX.length);
    if (!NAME.test(name)) return undefined;
    const record = await this.stores.robots.get(name);
    if (!record || !secretMatches(secret, record.secretHash)) return undefined;
    return isActive(record) ? name : undefined;
  }

  /** Whether a robot may still act (refresh tokens re-check this). */
  async isActive(name: string): Promise<boolean> {
    if (!NAME.test(name)) return false;
    const record = await this.stores.robots.get(name);
    return record !== undefined && isActive(record);
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

function isActive(record: RobotRecord): boolean {
  return record.revokedAt === undefined && (record.expiresAt === undefined || record.expiresAt > Date.now());
}
