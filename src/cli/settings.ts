// The configuration a CLI command runs with, and where it came from (for messages that say
// where Portcullis looked).
import { loadConfig, type Config } from '../config/config.js';

export interface CliSettings {
  readonly config: Config;
  /** The configuration file that was read (-c FILE or PORTCULLIS_CONFIG), if any. */
  readonly file: string | undefined;
  readonly env: NodeJS.ProcessEnv;
}

export type LoadSettings = () => CliSettings;

/** Loads the configuration from `file` (else PORTCULLIS_CONFIG) plus the environment. */
export function loadSettings(file: string | undefined, env: NodeJS.ProcessEnv = process.env): CliSettings {
  const chosen = file ?? (env.PORTCULLIS_CONFIG || undefined);
  return { config: loadConfig({ file: chosen, env }), file: chosen, env };
}
