// Content management workflow: deleting tags, manifests and blobs.
// (The spec lets a registry disable deletion with 400/405; this runner expects it enabled.)
import {
  expectBlob,
  expectEqual,
  expectError,
  expectManifest,
  expectStatus,
  parseJson,
  stringList,
  type WorkflowContext,
} from '../check.js';
import { getManifest, paths, pushImage, randomImage, unknownDigest } from '../client.js';

export async function managementWorkflow({ client, namespace, t }: WorkflowContext): Promise<void> {
  const repo = `${namespace}/management`;

  await t.section(async () => {
    const image = randomImage();
    const { manifest, layer } = image;
    await t.setup('push an image tagged kept and doomed', () => pushImage(client, repo, image, 'kept', 'doomed'));

    // Spec (end-9): DELETE /manifests/<tag> removes the tag -> 202; the tag is then 404,
    // while the manifest itself stays reachable by digest.
    await t.check('DELETE tag -> 202', async () => {
      expectStatus(await client.request('DELETE', paths.manifest(repo, 'doomed')), 202);
    });
    await t.check('GET deleted tag -> 404 MANIFEST_UNKNOWN', async () => {
      expectError(await getManifest(client, repo, 'doomed'), 404, 'MANIFEST_UNKNOWN');
    });
    await t.check('manifest still pullable by digest after tag deletion', async () => {
      expectManifest(await getManifest(client, repo, manifest.digest), manifest);
    });
    await t.check('tags/list no longer lists the deleted tag', async () => {
      const res = await client.request('GET', paths.tags(repo));
      expectStatus(res, 200);
      expectEqual(stringList(parseJson(res), 'tags', res.describe()), ['kept'], 'tags');
    });

    // Spec (end-9): DELETE /manifests/<digest> -> 202; the digest and any tag on it are then 404.
    await t.check('DELETE manifest by digest -> 202', async () => {
      expectStatus(await client.request('DELETE', paths.manifest(repo, manifest.digest)), 202);
    });
    await t.check('GET deleted manifest by digest -> 404 MANIFEST_UNKNOWN', async () => {
      expectError(await getManifest(client, repo, manifest.digest), 404, 'MANIFEST_UNKNOWN');
    });
    await t.check('GET tag of deleted manifest -> 404 MANIFEST_UNKNOWN', async () => {
      expectError(await getManifest(client, repo, 'kept'), 404, 'MANIFEST_UNKNOWN');
    });

    // Spec (end-10): DELETE /blobs/<digest> -> 202; the blob is then 404.
    await t.check('DELETE blob -> 202', async () => {
      expectBlob(await client.request('HEAD', paths.blob(repo, layer.digest)), layer);
      expectStatus(await client.request('DELETE', paths.blob(repo, layer.digest)), 202);
    });
    await t.check('GET deleted blob -> 404 BLOB_UNKNOWN', async () => {
      expectError(await client.request('GET', paths.blob(repo, layer.digest)), 404, 'BLOB_UNKNOWN');
    });
  });

  // Spec: deleting what is not there is 404.
  await t.check('DELETE unknown manifest -> 404 MANIFEST_UNKNOWN', async () => {
    expectError(await client.request('DELETE', paths.manifest(repo, unknownDigest())), 404, 'MANIFEST_UNKNOWN');
  });
  await t.check('DELETE unknown blob -> 404 BLOB_UNKNOWN', async () => {
    expectError(await client.request('DELETE', paths.blob(repo, unknownDigest())), 404, 'BLOB_UNKNOWN');
  });
}
