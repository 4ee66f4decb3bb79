// Assembles the trust layer: the policies (asked by the registry which tags are immutable), the
// signature extension, the intake that verifies signatures as they arrive, and the pull-time
// enforcement — all judging against the signers of the policy that applies to a repository.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { KnexSignatureStore } from '../metadata/knex-signature-store.js';
import { KnexTrustPolicyStore } from '../metadata/trust-policy-store.js';
import { PullEnforcement, type PullRecord } from './enforcement.js';
import { SignatureIntake, type BlobReader } from './intake.js';
import { TrustPolicies } from './policies.js';
import { SignatureService, type TrustSource } from './signatures.js';

export interface SignatureServices {
  signatures: SignatureService;
  intake: SignatureIntake;
  enforcement: PullEnforcement;
}

/** The trust policies in force, re-read after `cacheMs` so changes made elsewhere show up. */
export function createTrustPolicies(db: Knex, cacheMs: number): TrustPolicies {
  return new TrustPolicies(new KnexTrustPolicyStore(db), cacheMs);
}

export function createSignatureServices(options: {
  db: Knex;
  policies: TrustPolicies;
  /** reads signature payloads and bundles out of a repository */
  blobs: BlobReader;
  /** records denied and unsatisfied pulls in the audit log */
  recordPull: (event: PullRecord) => Promise<void>;
  log: Logger;
}): SignatureServices {
  const { db, policies, blobs, recordPull, log } = options;
  const store = new KnexSignatureStore(db);
  // Signatures are judged against the signers of the policy that applies, whatever its mode: the
  // result is recorded for auditors either way.
  const trust: TrustSource = async (repository) => {
    const policy = await policies.for(repository);
    return policy ? { signers: policy.signatures.signers, trustedRoot: policy.signatures.trustedRoot } : { signers: [] };
  };
  return {
    signatures: new SignatureService({ store, log, trust }),
    intake: new SignatureIntake({ store, log, trust, blobs }),
    enforcement: new PullEnforcement(policies, store, recordPull),
  };
}
