// Push workflow: every way of uploading a blob (monolithic, chunked, streamed,
// mounted), upload session status and cancellation, and manifest uploads of
// the four manifest types, plus the errors for bad uploads.
import {
  expectBlob,
  expectError,
  expectHeader,
  expectHeaderValue,
  expectDigestHeaderIfPresent,
  expectManifest,
  expectStatus,
  type WorkflowContext,
} from '../check.js';
import {
  MediaType,
  OCTET_STREAM,
  descriptor,
  emptyConfig,
  finishUpload,
  getManifest,
  imageManifest,
  indexManifest,
  pushBlob,
  pushImage,
  putManifest,
  randomConfig,
  randomImage,
  randomLayer,
  sha256,
  startUpload,
  unknownDigest,
  paths,
  type Content,
  type Descriptor,
  type RegistryClient,
} from '../client.js';

export async function pushWorkflow(ctx: WorkflowContext): Promise<void> {
  await blobUploadChecks(ctx);
  await mountChecks(ctx);
  await manifestChecks(ctx);
}

/** Where an upload session stands: its current URL. */
type Session = URL;

/**
 * PATCH one chunk at `offset`. Spec: 202 with `Range: 0-<last byte received>`
 * and a Location for the next request. Returns that Location.
 */
async function patchChunk(
  client: RegistryClient,
  session: Session,
  chunk: Uint8Array,
  offset: number,
): Promise<Session> {
  const res = await client.request('PATCH', session, {
    body: chunk,
    headers: { ...OCTET_STREAM, 'Content-Range': `${offset}-${offset + chunk.length - 1}` },
  });
  expectStatus(res, 202);
  expectHeaderValue(res, 'Range', `0-${offset + chunk.length - 1}`);
  return client.resolve(expectHeader(res, 'Location'));
}

/** Closing PUT with no body; spec: 201 with a Location, after which the blob is readable. */
async function finishAndVerify(client: RegistryClient, repo: string, session: Session, blob: Content): Promise<void> {
  const res = await finishUpload(client, session, blob.digest);
  expectStatus(res, 201);
  expectHeader(res, 'Location');
  expectBlob(await client.request('GET', paths.blob(repo, blob.digest)), blob);
}

/** Best-effort cleanup of an upload session a check left open. */
async function cancel(client: RegistryClient, session: Session): Promise<void> {
  await client.request('DELETE', session).catch(() => undefined);
}

async function blobUploadChecks({ client, namespace, t }: WorkflowContext): Promise<void> {
  const repo = `${namespace}/push`;

  // Spec (end-4b): POST ?digest= with the body MAY complete in one request (201 + Location);
  // a registry without single-POST support SHOULD answer 202 + Location and the client PUTs.
  await t.check('monolithic POST ?digest= with body -> 201 + Location', async () => {
    const blob = randomLayer();
    const res = await client.request('POST', paths.uploads(repo), {
      query: { digest: blob.digest },
      body: blob.bytes,
      headers: OCTET_STREAM,
    });
    expectStatus(res, [201, 202]);
    const location = client.resolve(expectHeader(res, 'Location'));
    let note = '';
    if (res.status === 202) {
      expectStatus(await finishUpload(client, location, blob.digest, blob.bytes), 201);
      note = 'answered 202 (single-POST unsupported, allowed); completed with PUT';
    }
    expectBlob(await client.request('GET', paths.blob(repo, blob.digest)), blob);
    return note;
  });

  // Spec (end-4a, end-6): POST -> 202 + Location, then PUT <location>?digest= with the body -> 201.
  await t.check('POST then PUT ?digest= with body -> 202, 201 + Location', async () => {
    const blob = randomLayer();
    const session = await startUpload(client, repo);
    const res = await finishUpload(client, session, blob.digest, blob.bytes);
    expectStatus(res, 201);
    expectHeader(res, 'Location');
    expectBlob(await client.request('GET', paths.blob(repo, blob.digest)), blob);
  });

  // Spec (end-5): chunks PATCHed in order with Content-Range/Content-Length, closed by PUT ?digest=.
  await t.check('chunked PATCH x2 with Content-Range, then PUT -> 201', async () => {
    const blob = randomLayer(MediaType.ociLayer, 5000);
    let session = await startUpload(client, repo);
    session = await patchChunk(client, session, blob.bytes.subarray(0, 2000), 0);
    session = await patchChunk(client, session, blob.bytes.subarray(2000), 2000);
    await finishAndVerify(client, repo, session, blob);
  });

  // Spec: a chunk whose first byte is not the current offset MUST be refused with 416.
  await t.check('PATCH with Content-Range not at current offset -> 416', async () => {
    const blob = randomLayer(MediaType.ociLayer, 3000);
    const session = await patchChunk(client, await startUpload(client, repo), blob.bytes.subarray(0, 1000), 0);
    try {
      const res = await client.request('PATCH', session, {
        body: blob.bytes.subarray(2000),
        headers: { ...OCTET_STREAM, 'Content-Range': '2000-2999' },
      });
      expectStatus(res, 416);
    } finally {
      await cancel(client, session);
    }
  });

  // Spec: a streamed upload PATCHes the whole blob without Content-Range (here with chunked
  // transfer encoding, so without Content-Length either), then closes with PUT.
  await t.check('streamed PATCH without Content-Range, then PUT -> 201', async () => {
    const blob = randomLayer(MediaType.ociLayer, 6000);
    const session = await startUpload(client, repo);
    const res = await client.request('PATCH', session, {
      body: { chunks: [blob.bytes.subarray(0, 2500), blob.bytes.subarray(2500)] },
      headers: OCTET_STREAM,
    });
    expectStatus(res, 202);
    expectHeaderValue(res, 'Range', `0-${blob.size - 1}`);
    await finishAndVerify(client, repo, client.resolve(expectHeader(res, 'Location')), blob);
  });

  // Spec (end-13): GET <location> of an open session -> 204, Range: 0-<last byte>, Location.
  await t.check('GET upload status -> 204 + Range: 0-N + Location', async () => {
    const chunk = randomLayer(MediaType.ociLayer, 1000).bytes;
    const session = await patchChunk(client, await startUpload(client, repo), chunk, 0);
    try {
      const res = await client.request('GET', session);
      expectStatus(res, 204);
      expectHeaderValue(res, 'Range', '0-999');
      expectHeader(res, 'Location');
    } finally {
      await cancel(client, session);
    }
  });

  // Spec (end-14): DELETE <location> cancels the session (SHOULD be 204); it is then unknown.
  await t.section(async () => {
    const session = await t.setup('open an upload session to cancel', () => startUpload(client, repo));
    await t.check('DELETE upload session -> 204', async () => {
      expectStatus(await client.request('DELETE', session), 204);
    });
    await t.check('GET cancelled upload -> 404 BLOB_UPLOAD_UNKNOWN', async () => {
      expectError(await client.request('GET', session), 404, 'BLOB_UPLOAD_UNKNOWN');
    });
  });

  // Spec: the closing PUT's digest must match the uploaded bytes, else 400 DIGEST_INVALID.
  await t.check('PUT upload with wrong digest -> 400 DIGEST_INVALID', async () => {
    const blob = randomLayer();
    const session = await startUpload(client, repo);
    try {
      expectError(await finishUpload(client, session, unknownDigest(), blob.bytes), 400, 'DIGEST_INVALID');
    } finally {
      await cancel(client, session);
    }
  });
}

async function mountChecks({ client, namespace, t }: WorkflowContext): Promise<void> {
  const source = `${namespace}/push`;
  const target = `${namespace}/push-mount`;

  // Spec (end-11): POST ?mount=<digest>&from=<repo holding it> -> 201 + Location; the blob is now in the target.
  await t.section(async () => {
    const blob = randomLayer();
    await t.setup('push a blob to mount from', () => pushBlob(client, source, blob));
    await t.check('mount blob from repository holding it -> 201, readable in target', async () => {
      const res = await client.request('POST', paths.uploads(target), { query: { mount: blob.digest, from: source } });
      expectStatus(res, 201);
      expectHeader(res, 'Location');
      expectBlob(await client.request('GET', paths.blob(target, blob.digest)), blob);
    });
  });

  // Spec: when the blob cannot be mounted the registry SHOULD fall back to a 202 upload session.
  await t.check('mount with from not holding the blob -> 202 upload session', async () => {
    const res = await client.request('POST', paths.uploads(target), { query: { mount: unknownDigest(), from: source } });
    expectStatus(res, 202);
    await cancel(client, client.resolve(expectHeader(res, 'Location')));
  });
}

/** One manifest type; `build` pushes whatever the manifest references and returns it, unpushed. */
interface ManifestCase {
  kind: string;
  build(): Promise<Content>;
}

async function manifestChecks({ client, namespace, t }: WorkflowContext): Promise<void> {
  const repo = `${namespace}/push`;

  const pushChildren = async (flavour: 'oci' | 'docker'): Promise<Descriptor[]> => {
    const platforms = [
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux' },
    ];
    const children: Descriptor[] = [];
    for (const platform of platforms) {
      const image = randomImage(flavour);
      await pushImage(client, repo, image);
      children.push(descriptor(image.manifest, { platform }));
    }
    return children;
  };
  const imageManifestWithBlobs = async (flavour: 'oci' | 'docker'): Promise<Content> => {
    const img = randomImage(flavour);
    for (const blob of [img.config, img.layer]) await pushBlob(client, repo, blob);
    return img.manifest;
  };
  const cases: ManifestCase[] = [
    { kind: 'OCI image manifest', build: () => imageManifestWithBlobs('oci') },
    {
      kind: 'OCI index',
      build: async () => indexManifest({ mediaType: MediaType.ociIndex, manifests: await pushChildren('oci') }),
    },
    { kind: 'Docker schema2 manifest', build: () => imageManifestWithBlobs('docker') },
    {
      kind: 'Docker manifest list',
      build: async () =>
        indexManifest({ mediaType: MediaType.dockerManifestList, manifests: await pushChildren('docker') }),
    },
  ];

  // Spec (end-7): PUT /manifests/<tag or digest> -> 201 + Location; the manifest is then
  // pullable by that reference, with its media type and exact bytes.
  for (const { kind, build } of cases) {
    for (const by of ['tag', 'digest'] as const) {
      await t.check(`PUT ${kind} by ${by} -> 201, then GET returns it`, async () => {
        const manifest = await build();
        const reference = by === 'tag' ? kind.toLowerCase().replace(/\W+/g, '-') : manifest.digest;
        const res = await putManifest(client, repo, reference, manifest);
        expectStatus(res, 201);
        expectHeader(res, 'Location');
        expectDigestHeaderIfPresent(res, manifest.digest);
        expectManifest(await getManifest(client, repo, reference), manifest);
      });
    }
  }

  // Spec: a registry that rejects a manifest for a missing blob MUST say MANIFEST_BLOB_UNKNOWN.
  await t.check('PUT manifest referencing unpushed blob -> 400 MANIFEST_BLOB_UNKNOWN', async () => {
    const config = randomConfig();
    await pushBlob(client, repo, config);
    const manifest = imageManifest({ config, layers: [randomLayer()] });
    expectError(await putManifest(client, repo, 'missing-blob', manifest), 400, 'MANIFEST_BLOB_UNKNOWN');
  });

  // Spec: a manifest's Content-Type must be its mediaType; a mismatch is an invalid manifest.
  await t.check('PUT manifest with Content-Type != body mediaType -> 400 MANIFEST_INVALID', async () => {
    const manifest = await imageManifestWithBlobs('oci');
    const res = await putManifest(client, repo, 'type-mismatch', manifest, MediaType.dockerManifest);
    expectError(res, 400, 'MANIFEST_INVALID');
  });

  // A reference that is neither a tag nor a digest cannot be written to.
  await t.check('PUT manifest to an invalid tag -> 400 MANIFEST_INVALID or TAG_INVALID', async () => {
    const manifest = await imageManifestWithBlobs('oci');
    const res = await putManifest(client, repo, '-invalid-tag', manifest);
    expectError(res, 400, ['MANIFEST_INVALID', 'TAG_INVALID']);
  });

  // Spec: a manifest PUT by digest must hash to that digest.
  await t.check('PUT manifest by digest of other content -> 400 DIGEST_INVALID', async () => {
    const manifest = await imageManifestWithBlobs('oci');
    const wrong = sha256(Buffer.concat([manifest.bytes, Buffer.from(' ')]));
    expectError(await putManifest(client, repo, wrong, manifest), 400, 'DIGEST_INVALID');
  });

  // Spec (1.1): a registry that processes `subject` answers with OCI-Subject: <subject digest>.
  await t.section(async () => {
    const subject = randomImage();
    await t.setup('push a subject image', () => pushImage(client, repo, subject));
    await t.check('PUT manifest with subject -> 201 + OCI-Subject', async () => {
      const referrer = await artifact(client, repo, descriptor(subject.manifest));
      const res = await putManifest(client, repo, referrer.digest, referrer);
      expectStatus(res, 201);
      expectHeaderValue(res, 'OCI-Subject', subject.manifest.digest);
    });
  });

  // Spec (1.1): a manifest whose subject is not (yet) in the registry MUST still be accepted.
  await t.check('PUT manifest with subject not in registry -> 201', async () => {
    const missing: Descriptor = { mediaType: MediaType.ociManifest, digest: unknownDigest(), size: 1234 };
    const referrer = await artifact(client, repo, missing);
    expectStatus(await putManifest(client, repo, referrer.digest, referrer), 201);
  });
}

/** An artifact manifest (empty config, one layer) pointing at `subject`; its blobs are pushed. */
async function artifact(client: RegistryClient, repo: string, subject: Descriptor): Promise<Content> {
  const config = emptyConfig();
  const layer = randomLayer();
  for (const blob of [config, layer]) await pushBlob(client, repo, blob);
  return imageManifest({
    artifactType: 'application/vnd.portcullis.conformance.signature',
    config,
    layers: [layer],
    subject,
  });
}
