// The registry signature extension (containers/image's "X-Registry-Supports-Signatures"), which
// `skopeo copy --sign-by` and `podman push --sign-by` use once /v2/ announces it:
//   GET /extensions/v2/<name>/signatures/<digest>  → 200 {"signatures":[…]}, an empty list when there are none
//   PUT /extensions/v2/<name>/signatures/<digest>  ← {"schemaVersion":2,"name":"<digest>@<id>","type":"atomic","content":"<base64>"} → 201
// Every skopeo/podman pull asks for the list, so it must answer 200 for any readable manifest.
import getRawBody from 'raw-body';
import { parseSubmission, type SignatureService } from '../../trust/signatures.js';
import { GPG_SIGNATURE_MAX_BYTES } from '../../trust/gpg.js';
import { reply, replyJson, type AppContext } from '../context.js';
import { badRequest } from '../errors.js';
import type { Route } from './v2/index.js';
import { authorOf, digestParam, repositoryOf } from './v2/request.js';

export const extensionPatterns = {
  signatures: /^\/extensions\/v2\/(?<name>.+)\/signatures\/(?<digest>[^/]+)$/,
};

/** The largest signature in base64, plus room for the other fields. */
const BODY_MAX_BYTES = Math.ceil(GPG_SIGNATURE_MAX_BYTES / 3) * 4 + 1024;

/** The body as JSON. containers/image sends no Content-Type, so none is asked for: the JSON itself is checked. */
async function jsonBody(ctx: AppContext): Promise<unknown> {
  const length = ctx.get('Content-Length');
  const body = await getRawBody(ctx.req, { limit: BODY_MAX_BYTES, length: length === '' ? undefined : length });
  ctx.state.bytesIn = body.length;
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (error) {
    throw badRequest(`the signature is not valid JSON: ${(error as Error).message}`);
  }
}

export function signatureExtensionRoutes(signatures: SignatureService): Route[] {
  return [
    {
      name: 'signatures.list',
      method: 'GET',
      pattern: extensionPatterns.signatures,
      access: { kind: 'repository', action: 'pull' },
      async handler(ctx) {
        const list = await signatures.list(repositoryOf(ctx), digestParam(ctx).value);
        replyJson(ctx, 200, { signatures: list });
      },
    },
    {
      name: 'signatures.put',
      method: 'PUT',
      pattern: extensionPatterns.signatures,
      access: { kind: 'repository', action: 'push' },
      async handler(ctx) {
        const repository = repositoryOf(ctx);
        const digest = digestParam(ctx).value;
        const submission = parseSubmission(await jsonBody(ctx), digest);
        await signatures.add(repository, digest, submission, authorOf(ctx));
        reply(ctx, 201, { 'Content-Length': 0 });
      },
    },
  ];
}
