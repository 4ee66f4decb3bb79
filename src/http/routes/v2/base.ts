import { replyJson, type AppContext } from '../../context.js';

/**
 * Extensions announced on every answer to /v2/, the 401 challenge included: containers/image
 * (skopeo, podman) pings /v2/ without credentials and decides from that answer alone whether
 * to keep signatures in the registry (/extensions/v2/…/signatures) or in a local directory.
 */
export const BASE_EXTENSION_HEADERS: Readonly<Record<string, string>> = { 'X-Registry-Supports-Signatures': '1' };

/** GET /v2/ — tells clients this is a registry speaking the distribution API. */
export async function apiVersionCheck(ctx: AppContext): Promise<void> {
  replyJson(ctx, 200, {});
}
