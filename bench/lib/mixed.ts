// The mixed load of issue 10: `--mixed-clients` clients, each looping over operations on small
// images in a few shared repositories for `--mixed-seconds`, mostly pulls, with pushes, re-tags
// and deletes. A round trip is one HTTP request; an unexpected answer is counted, not thrown.
import { ascending, percentile } from './pool.js';
import type { SmallImage } from './registry-ops.js';
import type { Context, Measured, ScenarioDef } from './scenarios.js';

const REPOSITORIES = 4;
/** Images each repository holds when the clock starts. */
const IMAGES_PER_REPOSITORY = 8;
/** A registry failing every request would otherwise be hammered in a tight loop until the time is up. */
const MAX_ERRORS = 1000;

type Kind = 'pull' | 'push' | 'retag' | 'delete';
const KINDS: readonly Kind[] = ['pull', 'push', 'retag', 'delete'];
/** Weights per operation (not per request): pull-heavy, and as many pushes as deletes, so the pool stays level. */
const WEIGHTS: Record<Kind, number> = { pull: 70, push: 10, retag: 10, delete: 10 };
/** HTTP requests per operation (auth challenges and token requests, before the clock, not counted). */
const ROUND_TRIPS: Record<Kind, number> = { pull: 2, push: 5, retag: 1, delete: 1 };

interface LiveImage extends SmallImage {
  tags: string[];
  /** Pulls and re-tags in flight: a delete waits for none, so no request hits a manifest being deleted. */
  users: number;
}

/** The images all clients share: pulls and re-tags borrow one, a delete takes one out for good. */
class ImagePool {
  private readonly images: LiveImage[] = [];

  get size(): number {
    return this.images.length;
  }

  add(image: SmallImage, tag: string): void {
    this.images.push({ ...image, tags: [tag], users: 0 });
  }

  borrow(): LiveImage | undefined {
    const image = this.images[randomIndex(this.images.length)];
    if (image) image.users++;
    return image;
  }

  release(image: LiveImage): void {
    image.users--;
  }

  /** Removes and returns an image nobody is using (a random one), if there is one. */
  take(): LiveImage | undefined {
    const start = randomIndex(this.images.length);
    for (let i = 0; i < this.images.length; i++) {
      const index = (start + i) % this.images.length;
      const image = this.images[index] as LiveImage;
      if (image.users > 0) continue;
      this.images[index] = this.images[this.images.length - 1] as LiveImage;
      this.images.pop();
      return image;
    }
    return undefined;
  }
}

const randomIndex = (length: number): number => Math.floor(Math.random() * length);
const pick = <T>(items: readonly T[]): T => items[randomIndex(items.length)] as T;

function randomKind(): Kind {
  let roll = Math.random() * KINDS.reduce((sum, kind) => sum + WEIGHTS[kind], 0);
  for (const kind of KINDS) if ((roll -= WEIGHTS[kind]) < 0) return kind;
  return 'pull';
}

interface Tally {
  roundTrips: number;
  errors: number;
  firstError?: string;
  done: Record<Kind, number[]>;
  failed: Record<Kind, number>;
}

export const mixed: ScenarioDef = {
  metrics: (o) => [
    { id: 'mixed', label: `mixed push/re-tag/pull/delete, c=${o.mixedClients}`, unit: 'req/s', higherIsBetter: true },
    { id: 'mixed_errors', label: 'mixed: unexpected responses', unit: 'count', higherIsBetter: false },
  ],
  run: runMixed,
};

async function runMixed(context: Context): Promise<Measured> {
  const { ops, options } = context;
  const repositories = Array.from({ length: REPOSITORIES }, (_, i) => context.repository(`mixed-${i}`));
  const pool = new ImagePool();
  let serial = 0;
  const push = async (repository: string): Promise<void> => {
    const tag = `p${++serial}`;
    pool.add(await ops.pushSmallImageDetailed(repository, tag, `${repository}:${tag}`), tag);
  };

  // Untimed: one of each operation per repository (so the client's token there covers pull, push
  // and delete), then the images the clients start from.
  for (const repository of repositories) {
    const image = await ops.pushSmallImageDetailed(repository, 'warm-up', `${repository}:warm-up`);
    await ops.retag(image, 'warm-up-2');
    await ops.pullSmallImage(image, 'warm-up-2');
    await ops.deleteManifest(repository, image.digest);
  }
  const seeds = repositories.flatMap((repository) => Array.from({ length: IMAGES_PER_REPOSITORY }, () => repository));
  await Promise.all(seeds.map(push));

  /** Runs `attempt.kind`, or a push instead when no image fits it (`attempt.kind` then says so). */
  const perform = async (attempt: { kind: Kind }): Promise<void> => {
    if (attempt.kind === 'push') return push(pick(repositories));
    if (attempt.kind === 'delete') {
      const image = pool.take();
      if (!image) return perform(Object.assign(attempt, { kind: 'push' }));
      return ops.deleteManifest(image.repository, image.digest);
    }
    const image = pool.borrow();
    if (!image) return perform(Object.assign(attempt, { kind: 'push' }));
    try {
      if (attempt.kind === 'pull') {
        await ops.pullSmallImage(image, pick(image.tags));
      } else {
        const tag = `r${++serial}`;
        await ops.retag(image, tag);
        image.tags.push(tag);
      }
    } finally {
      pool.release(image);
    }
  };

  const tally: Tally = {
    roundTrips: 0,
    errors: 0,
    done: { pull: [], push: [], retag: [], delete: [] },
    failed: { pull: 0, push: 0, retag: 0, delete: 0 },
  };
  const start = performance.now();
  const deadline = start + options.mixedSeconds * 1000;
  const client = async (): Promise<void> => {
    while (performance.now() < deadline && tally.errors < MAX_ERRORS) {
      const attempt = { kind: randomKind() };
      const began = performance.now();
      try {
        await perform(attempt);
        tally.roundTrips += ROUND_TRIPS[attempt.kind];
        tally.done[attempt.kind].push(performance.now() - began);
      } catch (error) {
        tally.errors++;
        tally.failed[attempt.kind]++;
        tally.firstError ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: options.mixedClients }, client));
  const seconds = (performance.now() - start) / 1000;
  return {
    values: { mixed: tally.roundTrips / seconds, mixed_errors: tally.errors },
    detail: details(tally, seconds, pool.size, options.mixedClients),
    ...(tally.errors > 0
      ? { errors: { mixed: `${tally.errors} unexpected responses or failed requests${tally.errors >= MAX_ERRORS ? ' (stopped early)' : ''}; the first: ${tally.firstError}` } }
      : {}),
  };
}

function details(tally: Tally, seconds: number, imagesLeft: number, clients: number): Record<string, number> {
  const detail: Record<string, number> = { clients, repositories: REPOSITORIES, seconds, round_trips: tally.roundTrips, errors: tally.errors, images_left: imagesLeft };
  for (const kind of KINDS) {
    const latencies = ascending(tally.done[kind]);
    detail[`${kind}_ops`] = latencies.length;
    detail[`${kind}_errors`] = tally.failed[kind];
    detail[`${kind}_p50_ms`] = percentile(latencies, 50);
    detail[`${kind}_p99_ms`] = percentile(latencies, 99);
  }
  return detail;
}
