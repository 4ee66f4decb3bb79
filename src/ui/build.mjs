// Builds the web console into dist/ui: one script and one stylesheet with content-hashed names
// (served as immutable), and index.html naming them. No inline script or style, so the server's
// Content-Security-Policy can forbid both. Type-checked separately (tsc -p src/ui).
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '../../dist/ui');

await rm(out, { recursive: true, force: true });
const result = await build({
  entryPoints: { app: join(here, 'main.tsx') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  entryNames: '[name]-[hash]',
  outdir: join(out, 'assets'),
  metafile: true,
  legalComments: 'eof',
  logLevel: 'warning',
});
const outputs = Object.keys(result.metafile.outputs).map((file) => basename(file));
const script = outputs.find((file) => file.endsWith('.js'));
const style = outputs.find((file) => file.endsWith('.css'));
if (!script || !style) throw new Error(`the console build produced no script or stylesheet: ${outputs.join(', ')}`);
const template = await readFile(join(here, 'index.html'), 'utf8');
await mkdir(out, { recursive: true });
await writeFile(join(out, 'index.html'), template.replace('%SCRIPT%', `/ui/assets/${script}`).replace('%STYLE%', `/ui/assets/${style}`));
