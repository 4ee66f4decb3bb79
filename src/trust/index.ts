// Assembles the trust layer: the policies (asked by the registry which tags are immutable), the
// signature extension, the intake that verifies signatures as they arrive, the pull-time
// enforcement, and the reverifier that judges stored results again when the policies change —
// all judging against the signers of the policy that applies to a repository.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { KnexSignatureStore } from '../metadata/knex-signature-store.js';
import { PullEnforcement, type PullRecord } from './enforcement.js';
import { SignatureIntake, type BlobReader } from './intake.js';
import { createTrustPolicies, type TrustPolicies } from './policies.js';
import { trustUnder } from './policy-digest.js';
import { Reverifier } from './reverify.js';
import { SignatureService, type TrustSource } from './signatures.js';

export type { ReverifyCounts } from './reverify.js';

export interface SignatureServices {
  signatures: SignatureService;
  intake: SignatureIntake;
  enforcement: PullEnforcement;
  /**
   * Judges stored results again when the policies change: start() it with the server and
   * stop() it before the database closes; afterTrustChange() once a change made through the
   * admin API has committed (the poll would notice it too, a little later).
   */
  reverifier: Reverifier;
}


export function createSignatureServices(options: {
  db: Knex;
  policies: TrustPolicies;
  /** reads signature payloads and bundles out of a repository */
  blobs: BlobReader;
  /** records denied and unsatisfied pulls in the audit log */
  recordPull: (event: PullRecord) => Promise<void>;
  log: Logger;
  /** how often the reverifier looks for policy changes (default 2 s) */
  reverifyPollMs?: number;
}): SignatureServices {
  const { db, policies, blobs, recordPull, log } = options;
  const store = new KnexSignatureStore(db);
  // Signatures are judged against the signers of the policy that applies, whatever its mode: the
  // result is recorded for auditors either way, stamped with the policy it was judged under.
  const trust: TrustSource = async (repository) => trustUnder(await policies.for(repository));
  const signatures = new SignatureService({ store, log, trust });
  const intake = new SignatureIntake({ store, log, trust, blobs });
  // The reverifier reads the policies uncached: a run right after a change must see it.
  const current = createTrustPolicies(db, 0);
  return {
    signatures,
    intake,
    enforcement: new PullEnforcement(policies, store, recordPull, policies.cacheMs),
    reverifier: new Reverifier({ store, policies: () => current.list(), gpg: signatures, manifests: intake.signatures, log, pollMs: options.reverifyPollMs }),
  };
}
