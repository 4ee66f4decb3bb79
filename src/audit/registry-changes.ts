// The registry's changes as audit events: manifest pushes, tag creations, moves and deletions,
// manifest and blob deletions, each written in the transaction that makes the change; and the
// changes an immutable tag refused, written as `denied` (nothing changed, so no transaction).
import type { RegistryChange } from '../metadata/store.js';
import type { ChangeLog } from '../registry/change-log.js';
import { auditRecord, type AuditEvent, type AuditLog, type Author } from './events.js';

/** The audit event of a registry change made (or refused) for `author`. */
export function changeEvent(change: RegistryChange, author: Author): AuditEvent {
  const who = { actor: author.actor, clientIp: author.clientIp, repository: change.repository };
  switch (change.type) {
    case 'manifest.pushed':
      return { ...who, type: change.type, tag: change.tag, newDigest: change.digest };
    case 'tag.created':
      return { ...who, type: change.type, tag: change.tag, newDigest: change.digest };
    case 'tag.moved':
      return { ...who, type: change.type, tag: change.tag, oldDigest: change.from, newDigest: change.to };
    case 'tag.deleted':
      return { ...who, type: change.type, tag: change.tag, oldDigest: change.digest };
    case 'manifest.deleted':
      return { ...who, type: change.type, oldDigest: change.digest, ...(change.tags.length > 0 ? { details: { tags: change.tags } } : {}) };
    case 'blob.deleted':
      return { ...who, type: change.type, oldDigest: change.digest };
  }
}

export class RegistryAuditTrail implements ChangeLog {
  constructor(private readonly audit: AuditLog) {}

  journal(author: Author) {
    return (changes: readonly RegistryChange[]) => changes.map((change) => auditRecord(changeEvent(change, author)));
  }

  refused(author: Author, change: RegistryChange, reason: string): Promise<void> {
    return this.audit.record({ ...changeEvent(change, author), outcome: 'denied', reason });
  }
}
