// Every migration, in order. Listed explicitly (not discovered from the file system) so the same
// list works from sources, compiled output and any working directory.
import type { Knex } from 'knex';
import * as registryCore from './20261126_001_registry_core.js';
import * as auth from './20261126_002_auth.js';
import * as uploadParts from './20261130_003_upload_parts.js';
import * as adminState from './20261130_004_admin_state.js';
import * as auditChain from './20261130_005_audit_chain.js';
import * as signatures from './20261130_006_signatures.js';
import * as trustPolicies from './20261130_007_trust_policies.js';
import * as verificationPolicy from './20261130_008_verification_policy.js';
import * as loginThrottle from './20261130_009_login_throttle.js';
import * as gc from './20261130_010_gc.js';
import * as tagAuthor from './20261130_011_tag_author.js';
import * as refreshTokenPurpose from './20261130_012_refresh_token_purpose.js';

interface Migration {
  name: string;
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

const migrations: Migration[] = [registryCore, auth, uploadParts, adminState, auditChain, signatures, trustPolicies, verificationPolicy, loginThrottle, gc, tagAuthor, refreshTokenPurpose];

export const migrationSource: Knex.MigrationSource<Migration> = {
  getMigrations: async () => migrations,
  getMigrationName: (migration) => migration.name,
  getMigration: async (migration) => migration,
};
