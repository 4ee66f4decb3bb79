#!/usr/bin/env -S node --max-semi-space-size=32
// portcullis serve | migrate | user … | policy apply/export | access check | keys rotate/list | audit verify | gc
import './threadpool.js';
import { applyServerV8Settings, missingServerFlags } from './node-flags.js';
import { Command } from 'commander';
import { ConfigError, databaseConfig } from '../config/config.js';
import { createLogger } from '../log.js';
import { migrateToLatest, openDatabase } from '../metadata/database.js';
import { UserError } from '../auth/identity/local.js';
import { registerUserCommands } from './users.js';
import { registerPolicyCommands } from './policy.js';
import { registerKeyCommands } from './keys.js';
import { registerAuditCommands } from './audit.js';
import { registerTrustCommands } from './trust.js';
import { registerGcCommand } from './gc.js';
import { TrustPolicyError } from '../trust/policy-file.js';
import { RuleError } from '../auth/policy/rules.js';
import { RegistryError } from '../registry/errors.js';
import { loadSettings, type CliSettings } from './settings.js';

const program = new Command()
  .name('portcullis')
  .description('A secure private OCI container image registry')
  .option('-c, --config <file>', 'YAML configuration file (or PORTCULLIS_CONFIG)')
  .addHelpText(
    'after',
    '\nSettings come from the configuration file plus PORTCULLIS_* environment variables, which win\n' +
      '(schemas/config.schema.json, schemas/portcullis.example.yaml). Only serve and migrate create a new\n' +
      'data folder; the other commands work on an existing one.',
  );

function settings(): CliSettings {
  return loadSettings(program.opts<{ config?: string }>().config);
}

const config = () => settings().config;

program
  .command('serve')
  .description('run the registry (creates the data folder and database when missing, applies migrations)')
  .action(async () => {
    const current = config();
    const log = createLogger(current.log.level);
    applyServerV8Settings();
    // A bug that escapes a request must be seen, but must not take every other request down.
    process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'unhandled promise rejection'));
    // Loaded here: the whole server (HTTP, verifiers, drivers) is more than the other commands need.
    const { startServer } = await import('../server.js');
    const server = await startServer(current, log);
    // Said once the server runs: a start that fails prints its reason and nothing else.
    const missing = missingServerFlags();
    if (missing.length > 0) log.warn({ missing }, 'node was started without the flags portcullis serve is meant to run with: streamed blobs cost more CPU (README, "Install and start")');
    // The first signal shuts down gracefully (config shutdown.*): exit 0 once every request in
    // flight finished, 1 when some had to be cut off. A second signal cuts them off at once.
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        server.abort(signal);
        process.exit(1);
      }
      stopping = true;
      log.info({ signal }, 'shutting down (a second SIGTERM or SIGINT stops at once)');
      server.shutdown(signal).then(
        (complete) => process.exit(complete ? 0 : 1),
        (error: unknown) => {
          log.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });

program
  .command('migrate')
  .description('create the database or bring it to the current schema, and exit (back up first)')
  .action(async () => {
    const db = openDatabase(databaseConfig(config()));
    try {
      const applied = await migrateToLatest(db);
      console.log(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'database is up to date');
    } finally {
      await db.destroy();
    }
  });

// These manage an existing registry: they never create a data folder (src/cli/database.ts).
registerUserCommands(program, settings);
registerPolicyCommands(program, settings);
registerKeyCommands(program, settings);
registerAuditCommands(program, settings);
registerTrustCommands(program, settings);
registerGcCommand(program, settings);

program.parseAsync().catch((error: unknown) => {
  if (error instanceof ConfigError || error instanceof UserError || error instanceof RuleError || error instanceof RegistryError || error instanceof TrustPolicyError) {
    console.error(`portcullis: ${error.message}`);
    process.exit(2);
  }
  console.error(`portcullis: ${explainStartupFailure(error)}`);
  process.exit(1);
});

/** One line an operator can act on, for the failures a start commonly meets; never a stack. */
function explainStartupFailure(error: unknown): string {
  const { code, address, port, path } = (error ?? {}) as { code?: string; address?: string; port?: number; path?: string };
  const where = address !== undefined ? `${address}:${port ?? ''}` : '';
  switch (code) {
    case 'EADDRINUSE':
      return `cannot listen on ${where}: the address is already in use (another Portcullis or another program); choose another with listen / PORTCULLIS_LISTEN`;
    case 'EADDRNOTAVAIL':
      return `cannot listen on ${where}: no network interface has that address (listen / PORTCULLIS_LISTEN)`;
    case 'EACCES':
      return path ? `permission denied on ${path}` : `cannot listen on ${where}: permission denied (ports below 1024 need privileges)`;
    case 'ENOENT':
      return `${path ?? 'a file'} does not exist`;
  }
  return error instanceof Error ? error.message : String(error);
}
