// The distribution API's route table, as data: one line per endpoint, in matching order.
// Repository names contain slashes, so routes are anchored regular expressions whose named
// groups become ctx.state.params.
import type { Registry } from '../../../registry/index.js';
import type { Handler } from '../../context.js';
import { apiVersionCheck } from './base.js';
import { blobRoutes } from './blobs.js';
import { listingRoutes } from './listings.js';
import { manifestRoutes } from './manifests.js';
import { uploadRoutes } from './uploads.js';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface Route {
  name: string;
  method: Method;
  pattern: RegExp;
  handler: Handler;
}

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

export function distributionRoutes(registry: Registry, options: { manifestMaxBytes: number }): Route[] {
  const blobs = blobRoutes(registry);
  const uploads = uploadRoutes(registry);
  const manifests = manifestRoutes(registry, options.manifestMaxBytes);
  const listings = listingRoutes(registry);
  return [
    { name: 'base', method: 'GET', pattern: patterns.base, handler: apiVersionCheck },
    { name: 'catalog', method: 'GET', pattern: patterns.catalog, handler: listings.catalog },
    { name: 'tags.list', method: 'GET', pattern: patterns.tags, handler: listings.tags },
    { name: 'referrers.list', method: 'GET', pattern: patterns.referrers, handler: listings.referrers },
    // HEAD before GET: the router also answers HEAD with a GET route, and the first match names the request.
    { name: 'manifest.head', method: 'HEAD', pattern: patterns.manifest, handler: manifests.get },
    { name: 'manifest.get', method: 'GET', pattern: patterns.manifest, handler: manifests.get },
    { name: 'manifest.put', method: 'PUT', pattern: patterns.manifest, handler: manifests.put },
    { name: 'manifest.delete', method: 'DELETE', pattern: patterns.manifest, handler: manifests.delete },
    { name: 'upload.start', method: 'POST', pattern: patterns.uploads, handler: uploads.start },
    { name: 'upload.status', method: 'GET', pattern: patterns.upload, handler: uploads.status },
    { name: 'upload.append', method: 'PATCH', pattern: patterns.upload, handler: uploads.append },
    { name: 'upload.finish', method: 'PUT', pattern: patterns.upload, handler: uploads.finish },
    { name: 'upload.cancel', method: 'DELETE', pattern: patterns.upload, handler: uploads.cancel },
    { name: 'blob.head', method: 'HEAD', pattern: patterns.blob, handler: blobs.get },
    { name: 'blob.get', method: 'GET', pattern: patterns.blob, handler: blobs.get },
    { name: 'blob.delete', method: 'DELETE', pattern: patterns.blob, handler: blobs.delete },
  ];
}
