// Pull workflow: reading manifests and blobs back, and the errors for content
// that does not exist or references that are malformed.
import {
  expectBlob,
  expectBytes,
  expectEmptyBody,
  expectError,
  expectHeader,
  expectManifest,
  expectStatus,
  fail,
  type WorkflowContext,
} from '../check.js';
import { getManifest, paths, pushImage, randomImage, unknownDigest } from '../client.js';

/** A syntactically broken sha256 digest (right length, not hex). */
const MALFORMED_DIGEST = `sha256:${'z'.repeat(64)}`;

export async function pullWorkflow({ client, namespace, t }: WorkflowContext): Promise<void> {
  const repo = `${namespace}/pull`;

  // Spec (end-1): GET /v2/ answers 200 when the registry implements this API.
  await t.check('GET /v2/ -> 200', async () => {
    expectStatus(await client.request('GET', '/v2/'), 200);
  });

  await t.section(async () => {
    const image = randomImage();
    const tag = 'v1';
    await t.setup('push an image (config, layer, manifest tagged v1)', () => pushImage(client, repo, image, tag));
    const { manifest, layer } = image;

    // Spec (end-3): manifests are addressable by tag and by digest, with GET and HEAD alike.
    for (const [by, reference] of [
      ['tag', tag],
      ['digest', manifest.digest],
    ] as const) {
      await t.check(`HEAD manifest by ${by} -> 200, digest, type, length`, async () => {
        expectManifest(await getManifest(client, repo, reference, 'HEAD'), manifest);
      });
      await t.check(`GET manifest by ${by} -> 200, digest, type, same bytes`, async () => {
        expectManifest(await getManifest(client, repo, reference), manifest);
      });
    }

    // Spec (end-2): blobs are fetched by digest, HEAD for existence.
    await t.check('HEAD blob -> 200 with Content-Length', async () => {
      expectBlob(await client.request('HEAD', paths.blob(repo, layer.digest)), layer);
    });
    await t.check('GET blob -> 200, same bytes', async () => {
      expectBlob(await client.request('GET', paths.blob(repo, layer.digest)), layer);
    });

    // Spec: endpoints SHOULD support range requests; a ranged GET is 206 with Content-Range.
    await t.check('GET blob with Range: bytes=a-b -> 206 + Content-Range', async () => {
      const [start, end] = [100, 1099];
      const res = await client.request('GET', paths.blob(repo, layer.digest), {
        headers: { Range: `bytes=${start}-${end}` },
      });
      if (res.status === 200) fail(`${res.describe()}: Range ignored, whole blob returned (range requests unsupported)`);
      expectStatus(res, 206);
      const contentRange = expectHeader(res, 'Content-Range');
      if (contentRange !== `bytes ${start}-${end}/${layer.size}` && contentRange !== `bytes ${start}-${end}/*`) {
        fail(`Content-Range is "${contentRange}", expected "bytes ${start}-${end}/${layer.size}"`);
      }
      expectBytes(res, layer.bytes.subarray(start, end + 1));
    });
  });

  // Spec: content that does not exist is 404, with MANIFEST_UNKNOWN / BLOB_UNKNOWN.
  await t.check('GET unknown tag -> 404 MANIFEST_UNKNOWN', async () => {
    expectError(await getManifest(client, repo, 'no-such-tag'), 404, 'MANIFEST_UNKNOWN');
  });
  await t.check('GET unknown manifest digest -> 404 MANIFEST_UNKNOWN', async () => {
    expectError(await getManifest(client, repo, unknownDigest()), 404, 'MANIFEST_UNKNOWN');
  });
  await t.check('HEAD unknown manifest -> 404', async () => {
    const res = await getManifest(client, repo, 'no-such-tag', 'HEAD');
    expectStatus(res, 404);
    expectEmptyBody(res);
  });
  await t.check('GET unknown blob -> 404 BLOB_UNKNOWN', async () => {
    expectError(await client.request('GET', paths.blob(repo, unknownDigest())), 404, 'BLOB_UNKNOWN');
  });
  await t.check('HEAD unknown blob -> 404', async () => {
    const res = await client.request('HEAD', paths.blob(repo, unknownDigest()));
    expectStatus(res, 404);
    expectEmptyBody(res);
  });
  // Spec: pulling from a repository that does not exist MUST be 404.
  await t.check('GET manifest in unknown repository -> 404 NAME_UNKNOWN', async () => {
    const res = await getManifest(client, `${namespace}/never-pushed`, 'latest');
    expectError(res, 404, ['NAME_UNKNOWN', 'MANIFEST_UNKNOWN']);
  });

  // Malformed references are client errors: 400 with the code naming the bad part.
  await t.check('GET manifest with invalid repository name -> 400 NAME_INVALID', async () => {
    expectError(await getManifest(client, `${namespace}/Not_Lower-Case`, 'latest'), 400, 'NAME_INVALID');
  });
  // A reference that is not a valid tag or digest names nothing: reading it finds nothing (404);
  // only writing to it is a malformed request (see the push workflow).
  await t.check('GET manifest with invalid tag -> 404 MANIFEST_UNKNOWN', async () => {
    // A tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}; a leading dash never does.
    expectError(await getManifest(client, repo, '-invalid-tag'), 404, 'MANIFEST_UNKNOWN');
  });
  await t.check('GET manifest with malformed digest -> 404 MANIFEST_UNKNOWN', async () => {
    expectError(await getManifest(client, repo, MALFORMED_DIGEST), 404, 'MANIFEST_UNKNOWN');
  });
  await t.check('GET blob with malformed digest -> 404 BLOB_UNKNOWN', async () => {
    expectError(await client.request('GET', paths.blob(repo, MALFORMED_DIGEST)), 404, 'BLOB_UNKNOWN');
  });
}
