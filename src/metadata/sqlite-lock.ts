// The embedded default belongs to one server process: a second `portcullis serve` on the same
// SQLite file would share it without sharing what each process keeps in memory (upload hash
// states, the login throttle). The server holds an exclusive SQLite lock on a small file beside the
// database for as long as it runs; the kernel drops that lock when the process ends, however it
// ends, so a crashed server never blocks its restart. CLI commands do not take it: they may run
// beside the server. Several servers are supported on PostgreSQL (see the README).
import Database from 'better-sqlite3';
import { ConfigError } from '../config/config.js';

export function lockSqliteDatabase(path: string): () => void {
  const lockPath = `${path}.serve-lock`;
  const lock = new Database(lockPath, { timeout: 0 });
  try {
    lock.pragma('locking_mode = EXCLUSIVE');
    lock.exec('BEGIN EXCLUSIVE');
  } catch (error) {
    lock.close();
    if ((error as { code?: string }).code === 'SQLITE_BUSY') {
      throw new ConfigError(
        `another Portcullis server is using ${path} (metadata.sqlite.path): the embedded SQLite default serves from one process; ` +
          'stop the other one, give this one its own dataDir, or use metadata.driver: postgres to run several',
      );
    }
    throw error;
  }
  return () => {
    if (lock.open) lock.close();
  };
}
