// Stored verification results never outlive the policy they were judged under. Each carries the
// digest of that policy (trust/policy-digest.ts) and enforcement counts only the current ones;
// the Reverifier judges the others again, from the signatures' stored bytes, and replaces them:
// - when the set of policies changes (it polls the policy store: a change made by another
//   replica or by `portcullis trust apply` shows up within a poll), and at once after a change
//   made here (reverifyStale());
// - again shortly after a change, and then now and then, for results written under the old
//   policy by a request that was judging while the change happened;
// - one run at a time in a process; replicas running at once stay correct, because a result
//   is replaced only if it is still the stale one they read (each replacement, and its
//   `signature.verified` event, is written once).
import type { Logger } from 'pino';
import { auditRecord } from '../audit/events.js';
import type { SignatureStore, StoredVerification, VerificationRecord } from '../metadata/signature-store.js';
import { ManifestSignatures } from './intake.js';
import { policyFor, type TrustPolicy } from './policy.js';
import { policyDigest, trustUnder, type PolicyTrust } from './policy-digest.js';
import { verificationRecord, verifiedEvent, type SignatureService } from './signatures.js';
import type { VerificationResult } from './verifier.js';

/** The trust policies as stored now (not a cached copy: a run judges against what is in force). */
export type PolicySource = () => Promise<readonly TrustPolicy[]>;

export interface ReverifyCounts {
  /** stale results judged again */
  checked: number;
  /** of those, the ones whose outcome flipped (valid ↔ invalid) */
  changed: number;
  /** the ones that could not be judged (a fault): left stale, so they still count for nothing */
  failed: number;
}

export interface ReverifierOptions {
  store: SignatureStore;
  policies: PolicySource;
  /** GPG signatures, judged from the signature extension's stored bytes */
  gpg: SignatureService;
  /** cosign signatures and sigstore bundles, judged from their stored manifests and blobs */
  manifests: ManifestSignatures;
  log: Logger;
  /** how often the policy set is looked at; default 2 s */
  pollMs?: number;
}

/** Repositories and results read per query. */
const REPOSITORY_PAGE = 200;
const RESULT_PAGE = 100;
/** A second look this long after a change or a failed run (results judged mid-change, faults). */
const FOLLOW_UP_MS = 30_000;
/** And a look now and then when nothing changed. */
const SWEEP_MS = 10 * 60_000;

const COSIGN_REF = /^(sha256:[a-f0-9]{64})#(\d{1,3})$/;

/** The policy set as a comparable value: each pattern and the digest of its document. */
function fingerprint(policies: readonly TrustPolicy[]): string {
  return policies
    .map((policy) => `${policy.repositories}=${policyDigest(policy)}`)
    .sort()
    .join('\n');
}

/** Told of each stored signature judged again (metrics): its format and outcome, `error` when it could not be judged. */
export type ReverificationObserver = (format: string, outcome: 'valid' | 'invalid' | 'error') => void;

export class Reverifier {
  private readonly pollMs: number;
  private observer: ReverificationObserver | undefined;
  private running: Promise<ReverifyCounts> | undefined;
  private queued: Promise<ReverifyCounts> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopped = false;
  /** the policy set the last run started from, and when to look again regardless */
  private seen: string | undefined;
  private nextSweep = 0;

  constructor(private readonly options: ReverifierOptions) {
    this.pollMs = options.pollMs ?? 2_000;
  }

  /**
   * Judges every stale result again (after a trust change: call it once the change is
   * committed). A call during a run waits for it and then runs once more, so it always covers
   * the policies as they were when it was called.
   */
  reverifyStale(): Promise<ReverifyCounts> {
    if (!this.running) {
      this.running = this.run().finally(() => (this.running = undefined));
      return this.running;
    }
    this.queued ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.reverifyStale();
      });
    return this.queued;
  }

  /**
   * For the admin API, once a trust change it made has committed: judges the stale results
   * again, and answers how many when that is done within `waitMs`; else nothing (the run goes
   * on in the background, and the request is not held up by a large registry).
   */
  async afterTrustChange(waitMs = 10_000): Promise<{ reverified: number } | void> {
    const run = this.reverifyStale();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)));
    try {
      const counts = await Promise.race([run, late]);
      if (counts) return { reverified: counts.checked };
      run.catch((error: unknown) => this.options.log.warn({ err: error }, 'could not judge stale signature results again after a trust change'));
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Reports every stored signature judged again from now on to `observer`. */
  observe(observer: ReverificationObserver): void {
    this.observer = observer;
  }

  /** Starts looking for policy changes (the first look is at once: changes made while stopped). */
  start(): void {
    if (this.timer || this.stopped) return;
    const tick = (): void => {
      this.ticking ??= this.tick().finally(() => (this.ticking = undefined));
    };
    this.timer = setInterval(tick, this.pollMs);
    this.timer.unref();
    tick();
  }

  /** Stops looking, and waits for a run in progress to stop at its next result. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
    await Promise.allSettled([this.running, this.queued]);
  }

  private async tick(): Promise<void> {
    let current: string;
    try {
      current = fingerprint(await this.options.policies());
    } catch (error) {
      this.options.log.warn({ err: error }, 'could not read the trust policies to look for changes');
      return;
    }
    const changed = current !== this.seen;
    if (!changed && Date.now() < this.nextSweep) return;
    this.seen = current;
    let failed = true;
    try {
      const counts = await this.reverifyStale();
      failed = counts.failed > 0;
      if (counts.checked > 0) this.options.log.info({ ...counts }, 'stored signature results judged again under the current trust policies');
    } catch (error) {
      this.options.log.warn({ err: error }, 'could not judge stale signature results again');
    }
    this.nextSweep = Date.now() + (changed || failed ? FOLLOW_UP_MS : SWEEP_MS);
  }

  private async run(): Promise<ReverifyCounts> {
    const counts: ReverifyCounts = { checked: 0, changed: 0, failed: 0 };
    if (this.stopped) return counts;
    const policies = await this.options.policies();
    let after: string | undefined;
    for (;;) {
      const page = await this.options.store.judgedRepositories(after, REPOSITORY_PAGE);
      for (const { repository, policyDigests } of page) {
        if (this.stopped) return counts;
        const policy = policyFor(policies, repository);
        const trust = trustUnder(policy);
        if (policyDigests.some((digest) => digest !== trust.policyDigest)) await this.repository(repository, policy, trust, counts);
      }
      if (page.length < REPOSITORY_PAGE) return counts;
      after = page[page.length - 1]?.repository;
    }
  }

  /** Judges a repository's stale results again, in pages by id (each result once per run). */
  private async repository(repository: string, policy: TrustPolicy | undefined, trust: PolicyTrust, counts: ReverifyCounts): Promise<void> {
    let afterId = 0;
    for (;;) {
      const stale = await this.options.store.staleVerifications(repository, trust.policyDigest, afterId, RESULT_PAGE);
      for (const result of stale) {
        if (this.stopped) return;
        counts.checked++;
        let record: VerificationRecord;
        try {
          record = await this.judge(result, trust);
        } catch (error) {
          counts.failed++;
          this.observer?.(result.record.format, 'error');
          this.options.log.error({ err: error, repository, digest: result.manifestDigest, signature: result.record.signatureRef }, 'could not judge a stored signature again');
          continue;
        }
        this.observer?.(record.format, record.outcome);
        const verified = verifiedEvent(record);
        const event = auditRecord({
          type: 'signature.verified',
          actorKind: 'system',
          repository,
          newDigest: result.manifestDigest,
          outcome: verified.outcome,
          reason: verified.reason,
          // Besides the result: why it was judged again, and the verdict it replaces.
          details: { ...verified.details, cause: 'trust policy changed', policy: policy?.repositories ?? null, previousOutcome: result.record.outcome },
        });
        const replaced = await this.options.store.replaceVerification(result, record, [event]);
        if (replaced && record.outcome !== result.record.outcome) counts.changed++;
      }
      if (stale.length < RESULT_PAGE) return;
      afterId = stale[stale.length - 1]?.id ?? afterId;
    }
  }

  /** A stored result judged again from the signature's stored bytes, by the code that judged it on arrival. */
  private async judge(stale: StoredVerification, trust: PolicyTrust): Promise<VerificationRecord> {
    const { repository, manifestDigest, record } = stale;
    const judged = (result: VerificationResult): VerificationRecord => ({ ...verificationRecord(result, record.signatureRef, trust), format: record.format });
    switch (record.format) {
      case 'gpg':
        return this.options.gpg.judgeStored(repository, manifestDigest, record.signatureRef, trust);
      case 'cosign': {
        const ref = COSIGN_REF.exec(record.signatureRef);
        const signatureManifest = ref ? await this.options.store.manifestPayload(repository, ref[1] as string) : undefined;
        if (!ref || !signatureManifest) return judged(gone('cosign', `the signature manifest ${record.signatureRef.split('#')[0] ?? ''} is no longer in this repository`));
        const result = await this.options.manifests.cosignLayer(repository, signatureManifest, Number(ref[2]), manifestDigest, trust);
        return judged(result ?? gone('cosign', `layer ${ref[2] as string} of the signature manifest is not a signature`));
      }
      case 'sigstore-bundle': {
        const referrer = await this.options.store.manifestPayload(repository, record.signatureRef);
        if (!referrer) return judged(gone('sigstore-bundle', `the bundle referrer ${record.signatureRef} is no longer in this repository`));
        return judged(await this.options.manifests.bundle(repository, referrer, manifestDigest, trust));
      }
      default:
        // Only the formats above are ever stored; a row written otherwise counts for nothing.
        return judged(gone('cosign', `signatures of format ${record.format} cannot be judged`));
    }
  }
}

function gone(format: VerificationResult['format'], reason: string): VerificationResult {
  return { format, outcome: 'invalid', reason };
}
