// Who changed what in a repository: the registry hands every change it makes to a change log
// (the audit log, wired in by the server), inside the change's own transaction, and tells it of
// the changes it refused. Without one, nothing is recorded (tests of the domain alone).
import type { Author } from '../audit/events.js';
import type { ChangeJournal, RegistryChange } from '../metadata/store.js';

export interface ChangeLog {
  /** The journal a change made for `author` appends to in its transaction. */
  journal(author: Author): ChangeJournal;
  /** Records a change that was refused, so nothing changed: who tried, what, and why not. */
  refused(author: Author, change: RegistryChange, reason: string): Promise<void>;
}

export const NO_CHANGE_LOG: ChangeLog = {
  journal: () => () => [],
  refused: async () => undefined,
};
