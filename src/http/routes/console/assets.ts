// The web console's files: index.html for /ui/ and every page path under it (the app routes in
// the browser), and the bundle under /ui/assets/, built into the package by `npm run build`
// (src/ui/build.mjs) — nothing is fetched from elsewhere. Every /ui response carries the strict
// headers below: scripts and styles from this origin only (no inline script, no eval), no
// framing, no sniffing, no referrer.
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type Router from '@koa/router';
import { RegistryError } from '../../../registry/errors.js';
import { reply, type AppContext, type RequestState } from '../../context.js';
import { named } from '../../named.js';

/** Where the build writes the console: dist/ui beside dist/src. */
export const CONSOLE_BUILD_DIR = fileURLToPath(new URL('../../../../ui/', import.meta.url));

export const CONSOLE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; " +
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), payment=(), usb=()',
};

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.map': 'application/json',
};

interface ConsoleFile {
  body: Buffer;
  type: string;
}

/** The built files, read once (a few hundred kilobytes); undefined when the console was not built. */
async function loadBuild(dir: string): Promise<{ index: ConsoleFile; assets: Map<string, ConsoleFile> } | undefined> {
  let names: string[];
  try {
    names = await readdir(join(dir, 'assets'));
  } catch {
    return undefined;
  }
  const assets = new Map<string, ConsoleFile>();
  for (const name of names) {
    const type = TYPES[name.slice(name.lastIndexOf('.'))];
    if (type !== undefined) assets.set(name, { body: await readFile(join(dir, 'assets', name)), type });
  }
  return { index: { body: await readFile(join(dir, 'index.html')), type: TYPES['.html'] as string }, assets };
}

/** Adds the console's security headers to every response under /ui. */
export async function consoleHeaders(ctx: AppContext, next: () => Promise<void>): Promise<void> {
  if (ctx.path === '/ui' || ctx.path.startsWith('/ui/')) ctx.set({ ...CONSOLE_SECURITY_HEADERS });
  await next();
}

export function registerConsoleAssetRoutes(router: Router<RequestState>, dir = CONSOLE_BUILD_DIR): void {
  let build: ReturnType<typeof loadBuild> | undefined;
  const files = async () => {
    build ??= loadBuild(dir);
    let loaded: Awaited<typeof build>;
    try {
      loaded = await build;
    } catch (error) {
      build = undefined; // a file that could not be read: read again next time
      throw error;
    }
    if (!loaded) {
      build = undefined; // built later (a developer's `npm run build`): look again next time
      throw new RegistryError('UNAVAILABLE', 'the web console is not built: run `npm run build`');
    }
    return loaded;
  };
  const send = (ctx: AppContext, file: ConsoleFile, cache: string) => reply(ctx, 200, { 'Content-Type': file.type, 'Content-Length': file.body.length, 'Cache-Control': cache }, file.body);

  // Exact paths (the router's own matching would take /ui/ for /ui, and loop).
  router.get(/^\/$/, named('console.root', async (ctx: AppContext) => reply(ctx, 302, { Location: '/ui/' })));
  router.get(/^\/ui$/, named('console.root', async (ctx: AppContext) => reply(ctx, 301, { Location: '/ui/' })));
  router.get(
    /^\/ui\/assets\/([^/]+)$/,
    named('console.asset', async (ctx: AppContext) => {
      const name = ctx.path.slice('/ui/assets/'.length);
      const file = (await files()).assets.get(name);
      if (!file) throw new RegistryError('NOT_FOUND', 'no such console file');
      // Names carry a content hash: a new build is a new name.
      send(ctx, file, 'public, max-age=31536000, immutable');
    }),
  );
  // Every other page path is the app's: it reads the path itself.
  router.get(
    /^\/ui\/(?!api(?:\/|$)|assets\/).*$/,
    named('console.page', async (ctx: AppContext) => send(ctx, (await files()).index, 'no-cache')),
  );
}
