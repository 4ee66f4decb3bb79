// Debian's Chromium driven by playwright-core: no browser download, the machine's own package
// (installed with apt-get where missing and we are root). Flags as this machine needs them: no
// sandbox as root, and nothing that calls out to Google's services (the network here is closed).
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { ensureCommands } from './packages.js';

export interface RunningBrowser {
  browser: Browser;
  /** A fresh context (its own cookies), closed with the browser. */
  newContext(): Promise<BrowserContext>;
  close(): Promise<void>;
}

export async function startChromium(): Promise<RunningBrowser> {
  const { chromium: executablePath } = await ensureCommands({ chromium: 'chromium' });
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
  return {
    browser,
    newContext: () => browser.newContext({ viewport: { width: 1280, height: 860 } }),
    async close() {
      // playwright made the (temporary) profile and removes it.
      await browser.close().catch(() => undefined);
    },
  };
}
