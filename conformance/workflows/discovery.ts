// Content discovery workflow: tag listing with pagination, the referrers API
// (distribution-spec 1.1), and the repository catalog.
import {
  expectContentType,
  expectEqual,
  expectError,
  expectHeaderValue,
  expectStatus,
  fail,
  parseJson,
  recordList,
  stringList,
  type WorkflowContext,
} from '../check.js';
import {
  MediaType,
  descriptor,
  emptyConfig,
  imageManifest,
  indexManifest,
  nextLink,
  paths,
  pushBlob,
  pushImage,
  pushManifest,
  randomConfig,
  randomImage,
  randomLayer,
  unknownDigest,
  type Content,
  type QueryValue,
  type RegistryClient,
  type RegistryResponse,
} from '../client.js';

export async function discoveryWorkflow(ctx: WorkflowContext): Promise<void> {
  await tagChecks(ctx);
  await referrerChecks(ctx);
  await catalogChecks(ctx);
}

/** GET a list endpoint and return the response with one of its string-list fields. */
async function getList(
  client: RegistryClient,
  target: string,
  field: 'tags' | 'repositories',
  query: Record<string, QueryValue> = {},
): Promise<{ res: RegistryResponse; list: string[] }> {
  const res = await client.request('GET', target, { query });
  expectStatus(res, 200);
  const body = parseJson(res);
  // An empty list may be encoded as null or left out; both mean "no entries".
  const list = body[field] === null || body[field] === undefined ? [] : stringList(body, field, res.describe());
  return { res, list };
}

/** Follows `Link: <...>; rel="next"` from a list page; fails if there is none. */
async function followNext(
  client: RegistryClient,
  page: RegistryResponse,
  field: 'tags' | 'repositories',
): Promise<string[]> {
  const next = nextLink(page);
  if (next === undefined) fail(`${page.describe()}: no Link header with rel="next"`);
  return (await getList(client, next, field)).list;
}

async function tagChecks({ client, namespace, t }: WorkflowContext): Promise<void> {
  const repo = `${namespace}/discovery`;
  // Pushed out of order; the spec wants them listed in lexical order.
  const tags = ['gamma', 'alpha', 'delta', 'beta'];
  const sorted = [...tags].sort();

  await t.section(async () => {
    const image = randomImage();
    await t.setup(`push an image tagged ${tags.join(', ')}`, () => pushImage(client, repo, image, ...tags));
    const listTags = (query: Record<string, QueryValue> = {}) => getList(client, paths.tags(repo), 'tags', query);

    // Spec (end-8a): 200 with {"name": <repo>, "tags": [...]} in lexical order.
    await t.check('tags/list -> 200, all tags in lexical order', async () => {
      const { res, list } = await listTags();
      expectEqual(parseJson(res).name, repo, 'name');
      expectEqual(list, sorted, 'tags');
    });
    // Spec (end-8b): ?n=<int> returns the first n tags.
    await t.check('tags/list?n=2 -> first 2 tags', async () => {
      expectEqual((await listTags({ n: 2 })).list, sorted.slice(0, 2), 'tags');
    });
    // Spec: when more tags remain, the page carries Link: <next page>; rel="next".
    await t.check('tags/list?n=2 -> Link rel="next" to the remaining tags', async () => {
      const { res } = await listTags({ n: 2 });
      expectEqual(await followNext(client, res, 'tags'), sorted.slice(2), 'tags on the next page');
    });
    // Spec: ?n=<int>&last=<tag> returns up to n tags after <tag>, exclusive.
    await t.check('tags/list?n=2&last=<2nd tag> -> the 2 tags after it', async () => {
      expectEqual((await listTags({ n: 2, last: sorted[1] })).list, sorted.slice(2, 4), 'tags');
    });
    // Spec: with `last`, `n` is optional.
    await t.check('tags/list?last=<1st tag> -> all tags after it', async () => {
      expectEqual((await listTags({ last: sorted[0] })).list, sorted.slice(1), 'tags');
    });
    // Spec: n=0 MUST give an empty list and MUST NOT carry a Link header.
    await t.check('tags/list?n=0 -> empty list, no Link', async () => {
      const { res, list } = await listTags({ n: 0 });
      expectEqual(list, [], 'tags');
      if (res.header('Link') !== undefined) fail(`${res.describe()}: has a Link header`);
    });
  });

  // Spec: listing tags of a repository that does not exist is 404 (NAME_UNKNOWN).
  await t.check('tags/list of unknown repository -> 404 NAME_UNKNOWN', async () => {
    expectError(await client.request('GET', paths.tags(`${namespace}/never-pushed`)), 404, 'NAME_UNKNOWN');
  });
}

const ArtifactType = {
  sbom: 'application/vnd.portcullis.conformance.sbom',
  signatureConfig: 'application/vnd.portcullis.conformance.signature.config+json',
  bundle: 'application/vnd.portcullis.conformance.bundle',
} as const;

interface Referrers {
  subject: Content;
  /** Declares artifactType and annotations. */
  sbom: Content;
  sbomAnnotations: Record<string, string>;
  /** No artifactType: its descriptor must take the config's media type. */
  signature: Content;
  /** An index with an artifactType. */
  bundle: Content;
}

/** Pushes a subject image and three manifests whose `subject` is it (by digest, untagged). */
async function pushReferrers(client: RegistryClient, repo: string): Promise<Referrers> {
  const image = randomImage();
  await pushImage(client, repo, image);
  const subject = descriptor(image.manifest);
  const layer = randomLayer();
  const empty = emptyConfig();
  const signatureConfig = randomConfig(ArtifactType.signatureConfig);
  for (const blob of [layer, empty, signatureConfig]) await pushBlob(client, repo, blob);

  const sbomAnnotations = { 'org.portcullis.conformance.kind': 'sbom' };
  const sbom = imageManifest({
    artifactType: ArtifactType.sbom,
    config: empty,
    layers: [layer],
    subject,
    annotations: sbomAnnotations,
  });
  const signature = imageManifest({ config: signatureConfig, layers: [layer], subject });
  const bundle = indexManifest({ artifactType: ArtifactType.bundle, manifests: [descriptor(sbom)], subject });
  for (const manifest of [sbom, signature, bundle]) await pushManifest(client, repo, manifest);
  return { subject: image.manifest, sbom, sbomAnnotations, signature, bundle };
}

/** Spec: the referrers answer is an OCI image index served as such; returns its descriptors. */
function referrersIndex(res: RegistryResponse): Record<string, unknown>[] {
  expectStatus(res, 200);
  expectContentType(res, MediaType.ociIndex);
  const body = parseJson(res);
  expectEqual(body.schemaVersion, 2, 'schemaVersion');
  expectEqual(body.mediaType, MediaType.ociIndex, 'mediaType');
  return recordList(body, 'manifests', res.describe());
}

function findDescriptor(list: Record<string, unknown>[], manifest: Content): Record<string, unknown> {
  const found = list.find((d) => d.digest === manifest.digest);
  if (!found) fail(`no descriptor for ${manifest.digest} among ${list.length} referrers`);
  return found;
}

async function referrerChecks({ client, namespace, t }: WorkflowContext): Promise<void> {
  const repo = `${namespace}/discovery`;
  const getReferrers = (digest: string, query: Record<string, QueryValue> = {}) =>
    client.request('GET', paths.referrers(repo, digest), { query });

  await t.section(async () => {
    const r = await t.setup('push a subject and 3 referrers (2 manifests, 1 index)', () =>
      pushReferrers(client, repo),
    );

    // Spec (end-12a): GET /referrers/<digest> lists every manifest whose subject is <digest>,
    // as descriptors with mediaType, digest and size.
    await t.check('GET referrers -> 200 image index listing every referrer', async () => {
      const list = referrersIndex(await getReferrers(r.subject.digest));
      const expected = [r.sbom, r.signature, r.bundle];
      expectEqual(list.map((d) => d.digest).sort(), expected.map((m) => m.digest).sort(), 'referrer digests');
      for (const manifest of expected) {
        const d = findDescriptor(list, manifest);
        expectEqual([d.mediaType, d.size], [manifest.mediaType, manifest.size], `mediaType, size of ${manifest.digest}`);
      }
    });
    // Spec: artifactType is the manifest's own, else (image manifests) the config's media type.
    await t.check('referrer descriptors carry artifactType (own, or config mediaType)', async () => {
      const list = referrersIndex(await getReferrers(r.subject.digest));
      expectEqual(findDescriptor(list, r.sbom).artifactType, ArtifactType.sbom, 'artifactType of sbom');
      expectEqual(findDescriptor(list, r.signature).artifactType, ArtifactType.signatureConfig, 'artifactType of signature');
      expectEqual(findDescriptor(list, r.bundle).artifactType, ArtifactType.bundle, 'artifactType of index');
    });
    // Spec: the descriptor carries the referrer's annotations.
    await t.check('referrer descriptors carry the manifest annotations', async () => {
      const list = referrersIndex(await getReferrers(r.subject.digest));
      expectEqual(findDescriptor(list, r.sbom).annotations, r.sbomAnnotations, 'annotations of sbom');
    });
    // Spec: ?artifactType= filters the list; a registry that filtered says OCI-Filters-Applied: artifactType.
    await t.check('GET referrers?artifactType= -> filtered + OCI-Filters-Applied', async () => {
      const res = await getReferrers(r.subject.digest, { artifactType: ArtifactType.sbom });
      const list = referrersIndex(res);
      expectHeaderValue(res, 'OCI-Filters-Applied', 'artifactType');
      expectEqual(list.map((d) => d.digest), [r.sbom.digest], 'filtered referrers');
    });
  });

  // Spec: a digest nobody refers to still gets 200 and an index with no manifests (never 404).
  await t.check('GET referrers of digest without referrers -> 200, empty index', async () => {
    expectEqual(referrersIndex(await getReferrers(unknownDigest())), [], 'manifests');
  });
  // Spec: an invalid digest is a bad request.
  await t.check('GET referrers with malformed digest -> 400', async () => {
    const res = await getReferrers(`sha256:${'z'.repeat(64)}`);
    expectStatus(res, 400);
    // The spec names no error code here; any well-formed error body will do.
    if (res.body.length > 0) expectError(res, 400);
  });
}

async function catalogChecks({ client, namespace, t }: WorkflowContext): Promise<void> {
  // Two repositories nothing else sorts between: "<ns>/catalog/one" < "<ns>/catalog/two".
  const [one, two] = [`${namespace}/catalog/one`, `${namespace}/catalog/two`];
  const listCatalog = (query: Record<string, QueryValue> = {}) =>
    getList(client, paths.catalog(), 'repositories', query);

  await t.section(async () => {
    for (const repo of [one, two]) {
      await t.setup(`push an image to ${repo}`, () => pushImage(client, repo, randomImage(), 'latest'));
    }

    // _catalog is not part of the OCI spec; these checks follow the Docker registry API,
    // where it pages exactly like tags/list.
    await t.check('_catalog -> 200 listing the repositories (following Link pages)', async () => {
      const seen = await collectCatalog(client);
      const missing = [one, two].filter((repo) => !seen.has(repo));
      if (missing.length > 0) fail(`_catalog (${seen.size} repositories) lacks ${missing.join(', ')}`);
    });
    await t.check('_catalog?n=1 -> 1 repository + Link rel="next"', async () => {
      const { res, list } = await listCatalog({ n: 1 });
      expectEqual(list.length, 1, 'number of repositories');
      if (nextLink(res) === undefined) fail(`${res.describe()}: no Link header with rel="next"`);
    });
    await t.check('_catalog?n=1&last=<repo> -> the repository after it', async () => {
      expectEqual((await listCatalog({ n: 1, last: one })).list, [two], 'repositories');
    });
    await t.check('_catalog?n=1&last= -> Link rel="next" leads to the following page', async () => {
      // "<ns>/catalog/on" is not a repository; it sorts just before "<ns>/catalog/one".
      const { res, list } = await listCatalog({ n: 1, last: `${namespace}/catalog/on` });
      expectEqual(list, [one], 'repositories');
      expectEqual(await followNext(client, res, 'repositories'), [two], 'repositories on the next page');
    });
  });
}

/** Every repository in the catalog, following Link pages (bounded, for large registries). */
async function collectCatalog(client: RegistryClient): Promise<Set<string>> {
  const seen = new Set<string>();
  let target: string | undefined = paths.catalog();
  for (let page = 0; target !== undefined && page < 200; page++) {
    const { res, list }: { res: RegistryResponse; list: string[] } = await getList(client, target, 'repositories');
    for (const repo of list) seen.add(repo);
    target = nextLink(res);
  }
  return seen;
}
