import { replyJson, type AppContext } from '../../context.js';

/** GET /v2/ — tells clients this is a registry speaking the distribution API. */
export async function apiVersionCheck(ctx: AppContext): Promise<void> {
  replyJson(ctx, 200, {});
}
