// Manifests and tags: push (validate, check dependencies, store, tag), pull with content
// negotiation, delete, and the referrers API.
import type { Author } from '../audit/events.js';
import type { ManifestRecord, MetadataStore, Referrer, RegistryChange } from '../metadata/store.js';
import { NO_CHANGE_LOG, type ChangeLog } from './change-log.js';
import { digestOf } from './digest.js';
import { errors, RegistryError } from './errors.js';
import { parseManifest, type Descriptor } from './manifest-parser.js';
import { MediaType } from './media-types.js';
import { parseManifestReference, type Digest, type ManifestReference } from './reference.js';
import { NO_TAG_PROTECTION, type TagGuard, type TagProtection } from './tag-guard.js';

export interface PushedManifest {
  digest: string;
  subject?: Descriptor;
  artifactType?: string | undefined;
  /** the tag it was pushed under, when pushed by tag */
  tag?: string | undefined;
}

export interface ReferrersIndex {
  schemaVersion: 2;
  mediaType: typeof MediaType.OciIndex;
  manifests: (Referrer & { artifactType?: string })[];
}

/** How the referrers list is paged: entries per page and a budget of descriptor bytes. */
export interface ReferrerPaging {
  maxEntries: number;
  maxBytes: number;
}

export class ManifestService {
  constructor(
    private readonly metadata: MetadataStore,
    private readonly referrerPages: ReferrerPaging,
    private readonly tags: TagGuard = NO_TAG_PROTECTION,
    private readonly changes: ChangeLog = NO_CHANGE_LOG,
  ) {}

  /**
   * Resolves a tag or digest. `accept` lists the media types the client takes (empty: any); a
   * manifest of another type is reported unknown, as distribution does, rather than sent.
   */
  async get(repository: string, reference: string, accept: string[] = []): Promise<ManifestRecord> {
    const parsed = readableReference(reference);
    const manifest = await this.metadata.getManifest(repository, lookupOf(parsed));
    if (!manifest) {
      if (!(await this.metadata.repositoryExists(repository))) throw errors.nameUnknown(repository);
      throw errors.manifestUnknown(reference);
    }
    if (!acceptable(manifest.mediaType, accept)) {
      throw errors.manifestUnknown(reference, `manifest is of type ${manifest.mediaType}, which the Accept header does not allow`);
    }
    return manifest;
  }

  async put(repository: string, reference: string, contentType: string | undefined, payload: Buffer, author: Author = {}): Promise<PushedManifest> {
    const target = parseManifestReference(reference);
    const parsed = parseManifest(payload, contentType);
    const digest = target.kind === 'digest' ? verifiedDigest(target.digest, payload) : digestOf(payload);
    const record: ManifestRecord = {
      digest,
      mediaType: parsed.mediaType,
      artifactType: parsed.artifactType,
      subjectDigest: parsed.subject?.digest,
      annotations: parsed.annotations,
      size: payload.length,
      payload,
    };
    const tag = target.kind === 'tag' ? target.tag : undefined;
    const protection = tag === undefined ? undefined : await this.tags.protection(repository);
    const immutableTag = tag !== undefined && protection?.isImmutable(tag) === true;
    const { problems, tagPointsElsewhere } = await this.metadata.putManifest(repository, record, parsed.dependencies, tag, {
      immutableTag,
      journal: this.changes.journal(author),
      taggedBy: author.actor,
    });
    if (tagPointsElsewhere !== undefined && protection && tag !== undefined) {
      throw await this.refuse(author, { type: 'tag.moved', repository, tag, from: tagPointsElsewhere, to: digest }, immutable(protection, tag, `it points at ${tagPointsElsewhere} and cannot be moved`));
    }
    const missing = problems.filter((p) => p.problem === 'missing');
    if (missing.length > 0) {
      throw new RegistryError('MANIFEST_BLOB_UNKNOWN', 'manifest references content unknown to this repository', {
        missing: missing.map((p) => ({ digest: p.dependency.digest, kind: p.dependency.kind })),
      });
    }
    if (problems.length > 0) {
      throw errors.manifestInvalid('descriptor size does not match the stored content', {
        mismatched: problems.map((p) => ({ digest: p.dependency.digest, declared: p.dependency.size, actual: p.actualSize })),
      });
    }
    return { digest, tag, artifactType: parsed.artifactType, ...(parsed.subject ? { subject: parsed.subject } : {}) };
  }

  async delete(repository: string, reference: string, author: Author = {}): Promise<void> {
    const parsed = readableReference(reference);
    const protection = await this.tags.protection(repository);
    const journal = this.changes.journal(author);
    if (parsed.kind === 'tag') {
      if (protection?.isImmutable(parsed.tag)) {
        // A protected tag is never deleted: not even one created after this check.
        const current = await this.metadata.getManifest(repository, { tag: parsed.tag });
        if (!current) throw errors.manifestUnknown(reference);
        throw await this.refuse(author, { type: 'tag.deleted', repository, tag: parsed.tag, digest: current.digest }, immutable(protection, parsed.tag, 'it cannot be deleted'));
      }
      if (!(await this.metadata.deleteTag(repository, parsed.tag, journal))) throw errors.manifestUnknown(reference);
      return;
    }
    const digest = parsed.digest.value;
    const { deleted, protectedBy } = await this.metadata.deleteManifest(repository, digest, {
      protectedTag: protection && ((tag) => protection.isImmutable(tag)),
      journal,
    });
    if (protection && protectedBy !== undefined) {
      const refusal = immutable(protection, protectedBy, 'the manifest it points at cannot be deleted');
      throw await this.refuse(author, { type: 'manifest.deleted', repository, digest, tags: [protectedBy] }, refusal);
    }
    if (!deleted) throw errors.manifestUnknown(reference);
  }

  /** Records a refused change in the change log; returns the refusal to throw. */
  private async refuse(author: Author, change: RegistryChange, refusal: RegistryError): Promise<RegistryError> {
    await this.changes.refused(author, change, refusal.message);
    return refusal;
  }

  /**
   * One page of the referrers of `subject`, newest first (a new signature is never hidden behind
   * old ones); `next` is the cursor of the following page.
   */
  async referrers(repository: string, subject: Digest, query: { artifactType?: string | undefined; cursor?: string | undefined }): Promise<{ index: ReferrersIndex; next?: string }> {
    const before = parseCursor(query.cursor);
    const page = await this.metadata.listReferrers(repository, subject.value, { artifactType: query.artifactType, before, ...this.referrerPages });
    const index: ReferrersIndex = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: page.referrers };
    return page.next === undefined ? { index } : { index, next: String(page.next) };
  }
}

/** A reference to read or delete: one that is not a valid tag or digest names no manifest. */
function readableReference(reference: string): ManifestReference {
  try {
    return parseManifestReference(reference);
  } catch (error) {
    if (error instanceof RegistryError) throw errors.manifestUnknown(reference.slice(0, 255));
    throw error;
  }
}

/** DENIED for an immutable tag, naming the policy that protects it. */
function immutable(protection: TagProtection, tag: string, why: string): RegistryError {
  return new RegistryError('DENIED', `tag ${tag} is immutable under the trust policy for ${protection.policy}: ${why}`, {
    tag,
    policy: protection.policy,
  });
}

function parseCursor(cursor: string | undefined): number | undefined {
  if (cursor === undefined || cursor === '') return undefined;
  if (!/^[1-9][0-9]{0,14}$/.test(cursor)) throw new RegistryError('PAGINATION_NUMBER_INVALID', 'invalid page cursor', { last: cursor.slice(0, 32) });
  return Number(cursor);
}

function lookupOf(reference: ManifestReference): { tag: string } | { digest: string } {
  return reference.kind === 'tag' ? { tag: reference.tag } : { digest: reference.digest.value };
}

function verifiedDigest(expected: Digest, payload: Buffer): string {
  const computed = digestOf(payload, expected.algorithm);
  if (computed !== expected.value) throw errors.digestInvalid({ expected: expected.value, computed });
  return computed;
}

function acceptable(mediaType: string, accept: string[]): boolean {
  if (accept.length === 0) return true;
  return accept.some((range) => range === mediaType || range === '*/*' || range === 'application/*');
}
