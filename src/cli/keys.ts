// portcullis keys rotate | list — the token signing keys kept under <dataDir>/keys.
import type { Command } from 'commander';
import { ConfigError } from '../config/config.js';
import { loadSigningKeys, rotateSigningKey } from '../auth/tokens/keys.js';
import { requireExistingDatabase } from './database.js';
import type { LoadSettings } from './settings.js';

export function registerKeyCommands(program: Command, settings: LoadSettings): void {
  const keys = program.command('keys').description('token signing keys');

  keys
    .command('rotate')
    .description('make a new signing key; the previous one still verifies tokens it signed (running servers reload within auth.token.keyReloadSeconds)')
    .action(async () => {
      const loaded = settings();
      const { config } = loaded;
      if (config.auth.token.keyFile) {
        throw new ConfigError('auth.token.keyFile is set: rotate by replacing that file (the keys directory is not used)');
      }
      // The keys belong beside an existing registry's data: a mistyped dataDir must not get keys of its own.
      requireExistingDatabase(loaded);
      const rotated = await rotateSigningKey(config.dataDir);
      console.log(`current key: ${rotated.current.kid}`);
      for (const key of rotated.previous) console.log(`still trusted: ${key.kid}`);
    });

  keys
    .command('list')
    .description('show the current signing key and the ones still trusted')
    .action(async () => {
      const loaded = settings();
      const { config } = loaded;
      // Without a key file, listing keys of a data folder that has none would create them.
      if (!config.auth.token.keyFile) requireExistingDatabase(loaded);
      const current = await loadSigningKeys({ keyFile: config.auth.token.keyFile, dataDir: config.dataDir });
      console.log(`current key: ${current.current.kid} (${current.source})`);
      for (const key of current.previous) console.log(`still trusted: ${key.kid}`);
    });
}
