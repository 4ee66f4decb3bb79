// No answer before its changes are on disk: a request during which anything was committed waits
// for the metadata log to be flushed (see metadata/group-commit.ts). Wrapped around the routes,
// inside the error mapping, so an error answer (a refused pull that was audited) waits too and a
// failed flush is answered as the storage fault it is.
import type { Middleware } from 'koa';
import type { CommitBarrier } from '../../metadata/group-commit.js';
import { BackendUnavailableError } from '../../registry/errors.js';
import type { RequestState } from '../context.js';

export function durableAcknowledgement(barrier: CommitBarrier): Middleware<RequestState> {
  return async (_ctx, next) => {
    const since = barrier.mark();
    try {
      await next();
    } finally {
      await barrier.durable(since).catch((error: unknown) => {
        throw new BackendUnavailableError('metadata database', error, 'its log could not be flushed to disk');
      });
    }
  };
}
