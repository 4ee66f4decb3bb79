// Route names for the request log and metrics, for routes registered by path rather than as a
// distribution Route (token, admin, console, health).
import type { Handler } from './context.js';

/** Names a non-distribution route for the request log. */
export function named(name: string, handler: Handler): Handler {
  return async (ctx) => {
    ctx.state.route = name;
    await handler(ctx);
  };
}
