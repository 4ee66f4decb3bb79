// Durable acknowledgements for the embedded SQLite database without an fsync per commit on the
// event loop. With `synchronous = FULL`, SQLite flushes its write-ahead log inside every COMMIT:
// better-sqlite3 runs that on the main thread, so sixteen pushes in flight wait for sixteen
// fsyncs in a row and every other request waits with them. Instead the connection runs with
// `synchronous = NORMAL` (in WAL mode: consistent after a power loss, the log synced before each
// checkpoint) and the server flushes the log itself, off the main thread, before it answers a
// request during which anything was committed. One flush covers every commit made before it
// began, so concurrent requests share it (group commit) and each acknowledged change is on disk
// exactly as with FULL.
import { type FileHandle, open } from 'node:fs/promises';

export interface CommitBarrier {
  /** A mark of the commits made so far, to pass to `durable` later. */
  mark(): number;
  /** Resolves once every commit made since `mark` is on disk; at once when there was none. */
  durable(since: number): Promise<void>;
}

/** For databases whose COMMIT is durable when it returns (PostgreSQL, SQLite with FULL). */
export const IMMEDIATE_DURABILITY: CommitBarrier = { mark: () => 0, durable: async () => undefined };

export class WalGroupCommit implements CommitBarrier {
  private commits = 0;
  private flushedUpTo = 0;
  private flushing: Promise<void> | undefined;
  /** How many times the log was flushed (for tests and figures). */
  flushes = 0;

  constructor(private readonly walPath: string) {}

  /** Called synchronously as a write is committed (an autocommit write, or a COMMIT). */
  committed(): void {
    this.commits += 1;
  }

  mark(): number {
    return this.commits;
  }

  async durable(since: number): Promise<void> {
    if (this.commits === since) return;
    const target = this.commits;
    while (this.flushedUpTo < target) await this.flush();
  }

  /** One flush at a time; whoever arrives during one waits for it, then for the next if needed. */
  private flush(): Promise<void> {
    this.flushing ??= this.flushOnce().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async flushOnce(): Promise<void> {
    // Commits run synchronously on this thread, so those counted now are all in the log's pages.
    const covered = this.commits;
    // fsync applies to the file, whichever descriptor names it; a fresh one survives the log
    // being reset or recreated between flushes.
    const handle = await open(this.walPath, 'r').catch((error: NodeJS.ErrnoException) => {
      // No log: the last connection closed, which checkpoints it into the database (synced) and removes it.
      if (error.code === 'ENOENT') return undefined;
      throw error;
    });
    if (handle) await flushed(handle);
    this.flushes += 1;
    if (covered > this.flushedUpTo) this.flushedUpTo = covered;
  }
}

async function flushed(handle: FileHandle): Promise<void> {
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}
