// portcullis keys rotate | list — the token signing keys kept under <dataDir>/keys.
import type { Command } from 'commander';
import { ConfigError, type Config } from '../config/config.js';
import { loadSigningKeys, rotateSigningKey } from '../auth/tokens/keys.js';

export function registerKeyCommands(program: Command, config: () => Config): void {
  const keys = program.command('keys').description('token signing keys');

  keys
    .command('rotate')
    .description('make a new signing key; the previous one still verifies tokens it signed (running servers reload within auth.token.keyReloadSeconds)')
    .action(async () => {
      const settings = config();
      if (settings.auth.token.keyFile) {
        throw new ConfigError('auth.token.keyFile is set: rotate by replacing that file (the keys directory is not used)');
      }
      const rotated = await rotateSigningKey(settings.dataDir);
      console.log(`current key: ${rotated.current.kid}`);
      for (const key of rotated.previous) console.log(`still trusted: ${key.kid}`);
    });

  keys
    .command('list')
    .description('show the current signing key and the ones still trusted')
    .action(async () => {
      const settings = config();
      const loaded = await loadSigningKeys({ keyFile: settings.auth.token.keyFile, dataDir: settings.dataDir });
      console.log(`current key: ${loaded.current.kid} (${loaded.source})`);
      for (const key of loaded.previous) console.log(`still trusted: ${key.kid}`);
    });
}
