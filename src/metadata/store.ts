import type { UploadPart } from '../storage/blob-store.js';
import type { AuditRecord } from './auth-stores.js';

// The metadata seam: the truth about what exists where. Implementations must make every method
// atomic (one transaction), so a crash or a concurrent request never exposes half a change.

export interface BlobRecord {
  digest: string;
  size: number;
  storageKey: string;
  /**
   * The stored copy was assembled from sealed upload parts, so it holds exactly `size` bytes of
   * verified content. Copies written before that (false) are checked before they are reused.
   */
  sealed?: boolean;
}

export interface ManifestRecord {
  digest: string;
  mediaType: string;
  artifactType?: string | undefined;
  subjectDigest?: string | undefined;
  annotations?: Record<string, string> | undefined;
  size: number;
  payload: Buffer;
}

export type ReferenceKind = 'blob' | 'manifest';

/** Something a manifest points at, which must already be present in the same repository. */
export interface ManifestDependency {
  digest: string;
  kind: ReferenceKind;
  size: number;
}

export interface DependencyProblem {
  dependency: ManifestDependency;
  problem: 'missing' | 'size-mismatch';
  actualSize?: number;
}

export interface Referrer {
  digest: string;
  mediaType: string;
  artifactType?: string | undefined;
  size: number;
  annotations?: Record<string, string> | undefined;
}

export interface UploadRecord {
  id: string;
  repository: string;
  /** bytes received so far: the sum of the parts' sizes */
  size: number;
  /** the finished parts, in byte order */
  parts: UploadPart[];
  /** who opened the session (token subject, or `anonymous@<address>`), for the per-principal cap */
  owner: string;
  createdAt: number;
  updatedAt: number;
}

/**
 * The session a blob commit finishes, as the committing request claimed it: its row goes in the
 * same transaction as the blob's link, and only while it is still that request's (held by
 * `writer`, at the `size` it had when claimed); otherwise the commit fails with UploadSessionLostError.
 */
export interface FinishedUpload {
  id: string;
  writer: string;
  size: number;
}

export interface ReferrersPage {
  artifactType?: string | undefined;
  /** continue with referrers older than this cursor (from a previous page's `next`) */
  before?: number | undefined;
  maxEntries: number;
  maxBytes: number;
}

export interface PageRequest {
  limit: number;
  /** exclusive lower bound in lexical order */
  last?: string | undefined;
}

export type ManifestLookup = { tag: string } | { digest: string };

/** A change to what a repository holds, as the transaction that made it saw it. */
export type RegistryChange =
  | { type: 'manifest.pushed'; repository: string; digest: string; tag?: string | undefined }
  | { type: 'tag.created'; repository: string; tag: string; digest: string }
  | { type: 'tag.moved'; repository: string; tag: string; from: string; to: string }
  | { type: 'tag.deleted'; repository: string; tag: string; digest: string }
  | { type: 'manifest.deleted'; repository: string; digest: string; tags: string[]; reason?: string | undefined }
  | { type: 'blob.deleted'; repository: string; digest: string; reason?: string | undefined };

/**
 * Turns the changes of one transaction into the audit records that transaction appends last,
 * so a change and its record commit together or not at all (and a rolled-back change leaves none).
 */
export type ChangeJournal = (changes: readonly RegistryChange[]) => readonly AuditRecord[];

export interface MetadataStore {
  repositoryExists(repository: string): Promise<boolean>;

  /**
   * The blob when it is linked to the repository (the only way a blob becomes readable). With
   * `touch` (a client probing for the blob, as a push does before it relies on it), the grace of
   * the digest's pending garbage-collection reviews restarts; nothing is written when none is pending.
   */
  findRepositoryBlob(repository: string, digest: string, options?: { touch?: boolean }): Promise<BlobRecord | undefined>;
  /**
   * Restarts the grace of the pending garbage-collection reviews of these digests' links (in any
   * repository): a client relies on them now. An indexed update that writes nothing when no review
   * is pending, and never waits for a collector that holds a review.
   */
  touchBlobReviews(digests: readonly string[]): Promise<void>;
  /**
   * Records freshly stored bytes and links them to the repository. When the digest was already
   * known, the existing record wins and is returned: the caller then discards its own copy. A new
   * link is queued for garbage-collection review in the same transaction (nothing references it
   * yet), so a link no manifest ever uses is found without walking anything.
   */
  commitBlob(repository: string, blob: BlobRecord, finished?: FinishedUpload): Promise<BlobRecord>;
  /**
   * Points a digest's record at another stored copy, provided it still points at `from` (a copy
   * found damaged is replaced by a fresh verified one); false when the record changed meanwhile.
   */
  replaceBlobCopy(digest: string, from: string, to: string): Promise<boolean>;
  /** Records that a copy written before sealed parts was checked whole and is exact. */
  markBlobSealed(digest: string, storageKey: string): Promise<void>;
  /** Links a blob already linked in `from` into `repository`; undefined when `from` does not have it. */
  mountBlob(repository: string, from: string, digest: string): Promise<BlobRecord | undefined>;
  /**
   * Unlinks a blob from a repository. When no repository links it any more the blob record is
   * removed as well, its storage key goes into the storage-delete outbox in the same transaction,
   * and it is returned as `orphan`: the caller may delete the bytes at once and then call
   * `finishStorageDelete` (if it does not, or fails, the garbage collector does it later).
   */
  unlinkBlob(repository: string, digest: string, journal?: ChangeJournal): Promise<{ unlinked: boolean; orphan?: BlobRecord }>;
  /** The bytes of a key in the storage-delete outbox are gone: forget the key. */
  finishStorageDelete(storageKey: string): Promise<void>;

  /**
   * Records a new session unless its owner already has `maxOpen` sessions open (false then);
   * the check and the insert are one atomic step, also between replicas.
   */
  createUpload(upload: UploadRecord, maxOpen: number): Promise<boolean>;
  getUpload(repository: string, id: string): Promise<UploadRecord | undefined>;
  /**
   * Claims the session for one writer until `until` (epoch ms), provided its size is still `size`
   * and no other writer holds an unexpired claim; false otherwise.
   */
  claimUpload(id: string, size: number, writer: string, until: number): Promise<boolean>;
  /** Extends a claim while a long write goes on. */
  renewUploadClaim(id: string, writer: string, until: number): Promise<void>;
  /**
   * Appends a finished part to a session still at size `from` and still claimed by `writer`, and
   * releases the claim unless `keepClaim`; false when the claim was lost.
   */
  advanceUpload(id: string, writer: string, from: number, part: UploadPart, keepClaim?: boolean): Promise<boolean>;
  releaseUploadClaim(id: string, writer: string): Promise<void>;
  deleteUpload(id: string): Promise<boolean>;
  /** Sessions untouched since `before` and not being written to. */
  listUploadsIdleSince(before: number, limit: number): Promise<UploadRecord[]>;
  uploadExists(id: string): Promise<boolean>;

  getManifest(repository: string, lookup: ManifestLookup): Promise<ManifestRecord | undefined>;
  /**
   * Stores a manifest and optionally points a tag at it, after checking in the same transaction
   * that everything it depends on is present in the repository (and holding it there against the
   * garbage collector until the transaction ends). Nothing is written when a problem is returned.
   * An `immutableTag` that points at another manifest is not moved: nothing is written and
   * `tagPointsElsewhere` names where it points. Concurrent pushes of one tag take turns on its
   * row, so the journal sees each move from the manifest the previous one set. A manifest stored
   * without a tag, and one a tag moved away from, is queued for garbage-collection review.
   */
  putManifest(
    repository: string,
    manifest: ManifestRecord,
    dependencies: ManifestDependency[],
    tag?: string,
    /** taggedBy: who pushed, kept on the tag when it is created or moved */
    options?: { immutableTag?: boolean; journal?: ChangeJournal; taggedBy?: string | undefined },
  ): Promise<{ problems: DependencyProblem[]; tagPointsElsewhere?: string }>;
  /**
   * Deletes a manifest and its tags, unless one of its tags is `protectedTag` (then nothing is
   * deleted and that tag is returned); the check and the delete are one transaction, which also
   * queues for garbage-collection review the blobs and child manifests it referenced and the
   * referrers whose subject it was.
   */
  deleteManifest(
    repository: string,
    digest: string,
    options?: { protectedTag?: ((tag: string) => boolean) | undefined; journal?: ChangeJournal },
  ): Promise<{ deleted: boolean; protectedBy?: string }>;
  /** Deletes a tag; the manifest it pointed at is queued for garbage-collection review. */
  deleteTag(repository: string, tag: string, journal?: ChangeJournal): Promise<boolean>;

  /** Tags in lexical order, or undefined when the repository does not exist. */
  listTags(repository: string, page: PageRequest): Promise<string[] | undefined>;
  /** Repository names in lexical order; with `namespaces`, only those equal to or below one of them. */
  listRepositories(page: PageRequest & { namespaces?: readonly string[] | undefined }): Promise<string[]>;
  /**
   * Manifests whose subject is `subject`, newest first, one page at a time: at most `maxEntries`,
   * and no more than fit in `maxBytes` of descriptor JSON (but always at least one, so every
   * referrer is reachable). `next` continues after the last one returned.
   */
  listReferrers(repository: string, subject: string, page: ReferrersPage): Promise<{ referrers: Referrer[]; next?: number }>;

  checkHealth(): Promise<void>;
  close(): Promise<void>;
}
