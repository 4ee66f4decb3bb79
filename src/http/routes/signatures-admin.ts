// GET /admin/v1/signatures?repository=<name>&digest=<digest>: the signatures stored for one
// manifest and the stored result of verifying each (outcome, signer, identity, reason, time), for
// administrators. Answers and mistakes are shaped like the rest of /admin/v1 (RFC 9457 problems).
import { STATUS_CODES } from 'node:http';
import { grants } from '../../auth/tokens/access.js';
import type { VerificationRecord } from '../../metadata/signature-store.js';
import { RegistryError } from '../../registry/errors.js';
import { isValidName, parseDigest } from '../../registry/reference.js';
import type { SignatureService } from '../../trust/signatures.js';
import { replyJson, type AppContext, type Handler } from '../context.js';
import { responseOf } from '../errors.js';
import type { Authorizer } from '../middleware/authorize.js';

export const SIGNATURES_ADMIN_PATH = '/admin/v1/signatures';

class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function singleQuery(ctx: AppContext, name: string): string {
  const value = ctx.query[name];
  if (Array.isArray(value)) throw new Refusal(400, `give the query parameter ${name} once`);
  if (value === undefined || value === '') throw new Refusal(400, `the query parameter ${name} is required`);
  return value;
}

const showVerification = (record: VerificationRecord) => ({
  format: record.format,
  signature: record.signatureRef,
  outcome: record.outcome,
  ...(record.signer !== undefined ? { signer: record.signer } : {}),
  ...(record.identity !== undefined ? { identity: record.identity } : {}),
  reason: record.reason,
  verifiedAt: new Date(record.verifiedAt).toISOString(),
});

export function signaturesAdminHandler(signatures: SignatureService, bearer: Authorizer): Handler {
  return async (ctx) => {
    ctx.state.route = 'admin.signatures.get';
    // A missing or invalid token gets the 401 challenge, as on every admin call.
    const claims = await bearer.authenticate(ctx, { kind: 'admin' });
    try {
      if (!grants(claims.access, 'registry', 'admin', '*')) throw new Refusal(403, 'administrator rights required');
      const repository = singleQuery(ctx, 'repository');
      if (!isValidName(repository)) throw new Refusal(400, 'repository must be a valid repository name');
      let digest: string;
      try {
        digest = parseDigest(singleQuery(ctx, 'digest')).value;
      } catch (error) {
        if (error instanceof RegistryError) throw new Refusal(400, `digest: ${error.message}`);
        throw error;
      }
      const report = await signatures.describe(repository, digest);
      if (!report) throw new Refusal(404, `no manifest ${digest} in ${repository}`);
      replyJson(ctx, 200, {
        repository,
        digest,
        signatures: report.signatures.map((signature) => ({ ...signature, createdAt: new Date(signature.createdAt).toISOString() })),
        verifications: report.verifications.map(showVerification),
      });
    } catch (error) {
      const mapped = responseOf(error);
      const [status, detail] =
        error instanceof Refusal ? [error.status, error.message] : mapped && (mapped.status < 500 || mapped.status === 503) ? [mapped.status, mapped.message] : [500, 'internal server error'];
      if (status >= 500) ctx.state.log.error({ err: error }, status === 503 ? detail : 'unexpected error');
      const problem = { type: 'about:blank', title: STATUS_CODES[status] ?? 'Error', status, detail, ...(status === 500 ? { requestId: ctx.state.requestId } : {}) };
      replyJson(ctx, status, problem, {}, 'application/problem+json');
    }
  };
}
