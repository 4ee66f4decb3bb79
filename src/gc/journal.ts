// The collector's deletions in the audit trail: the same events as any repository change
// (`manifest.deleted`, `blob.deleted`), written in the transaction that makes them, by the server
// itself (actor kind `system`, actor `gc`), with the reason the collector had.
import { auditRecord } from '../audit/events.js';
import { changeEvent } from '../audit/registry-changes.js';
import type { ChangeJournal } from '../metadata/store.js';

export const GC_ACTOR = 'gc';

export const gcJournal: ChangeJournal = (changes) =>
  changes.map((change) => {
    const event = changeEvent(change, { actor: GC_ACTOR });
    const reason = 'reason' in change ? change.reason : undefined;
    return auditRecord({ ...event, actorKind: 'system', ...(reason !== undefined ? { reason } : {}) });
  });
