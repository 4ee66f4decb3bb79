// The distribution API's route table, as data: one line per endpoint, in matching order.
// Repository names contain slashes, so routes are anchored regular expressions whose named
// groups become ctx.state.params.
import type { Registry } from '../../../registry/index.js';
import type { Handler } from '../../context.js';
import type { RouteAccess } from '../../middleware/authorize.js';
import { apiVersionCheck } from './base.js';
import { blobRoutes } from './blobs.js';
import { listingRoutes, type CatalogFilter } from './listings.js';
import { manifestRoutes, type ManifestPushed, type PullGate } from './manifests.js';
import { uploadRoutes } from './uploads.js';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface Route {
  name: string;
  method: Method;
  pattern: RegExp;
  /** What the caller's token must grant; checked before the handler runs. */
  access: RouteAccess;
  handler: Handler;
}

const pull: RouteAccess = { kind: 'repository', action: 'pull' };
const push: RouteAccess = { kind: 'repository', action: 'push' };
const remove: RouteAccess = { kind: 'repository', action: 'delete' };

const NAME = '(?<name>.+)';
const SEGMENT = '[^/]+';

export const patterns = {
  base: /^\/v2\/?$/,
  catalog: /^\/v2\/_catalog$/,
  tags: new RegExp(`^/v2/${NAME}/tags/list$`),
  referrers: new RegExp(`^/v2/${NAME}/referrers/(?<digest>${SEGMENT})$`),
  manifest: new RegExp(`^/v2/${NAME}/manifests/(?<reference>${SEGMENT})$`),
  uploads: new RegExp(`^/v2/${NAME}/blobs/uploads/?$`),
  upload: new RegExp(`^/v2/${NAME}/blobs/uploads/(?<uuid>${SEGMENT})$`),
  blob: new RegExp(`^/v2/${NAME}/blobs/(?<digest>${SEGMENT})$`),
};

export function distributionRoutes(
  registry: Registry,
  options: { manifestMaxBytes: number; catalogFilter: CatalogFilter; manifestPushed?: ManifestPushed; pullGate?: PullGate },
): Route[] {
  const blobs = blobRoutes(registry);
  const uploads = uploadRoutes(registry);
  const manifests = manifestRoutes(registry, options.manifestMaxBytes, options.manifestPushed, options.pullGate);
  const listings = listingRoutes(registry, options.catalogFilter);
  return [
    { name: 'base', method: 'GET', pattern: patterns.base, access: { kind: 'authenticated' }, handler: apiVersionCheck },
    { name: 'catalog', method: 'GET', pattern: patterns.catalog, access: { kind: 'catalog' }, handler: listings.catalog },
    { name: 'tags.list', method: 'GET', pattern: patterns.tags, access: pull, handler: listings.tags },
    { name: 'referrers.list', method: 'GET', pattern: patterns.referrers, access: pull, handler: listings.referrers },
    // HEAD before GET: the router also answers HEAD with a GET route, and the first match names the request.
    { name: 'manifest.head', method: 'HEAD', pattern: patterns.manifest, access: pull, handler: manifests.get },
    { name: 'manifest.get', method: 'GET', pattern: patterns.manifest, access: pull, handler: manifests.get },
    { name: 'manifest.put', method: 'PUT', pattern: patterns.manifest, access: push, handler: manifests.put },
    { name: 'manifest.delete', method: 'DELETE', pattern: patterns.manifest, access: remove, handler: manifests.delete },
    { name: 'upload.start', method: 'POST', pattern: patterns.uploads, access: push, handler: uploads.start },
    { name: 'upload.status', method: 'GET', pattern: patterns.upload, access: push, handler: uploads.status },
    { name: 'upload.append', method: 'PATCH', pattern: patterns.upload, access: push, handler: uploads.append },
    { name: 'upload.finish', method: 'PUT', pattern: patterns.upload, access: push, handler: uploads.finish },
    { name: 'upload.cancel', method: 'DELETE', pattern: patterns.upload, access: push, handler: uploads.cancel },
    { name: 'blob.head', method: 'HEAD', pattern: patterns.blob, access: pull, handler: blobs.get },
    { name: 'blob.get', method: 'GET', pattern: patterns.blob, access: pull, handler: blobs.get },
    { name: 'blob.delete', method: 'DELETE', pattern: patterns.blob, access: remove, handler: blobs.delete },
  ];
}
