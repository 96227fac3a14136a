/// <reference lib="dom" />
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createMailer, createOutbox, type Mailer } from '@mailvia/core';
import express from 'express';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mailvia, mailviaOutbox } from '../src/index.js';
import { startChromium } from './browser.js';
import { EXPRESS_VERSIONS, json, type Served, serve } from './helpers.js';

const ARTIFACTS = join(import.meta.dirname, '../test-artifacts');
// Generous: two cores are shared with other test runs.
const POLL = { timeout: 15_000, interval: 50 };

/** The application: a route that sends through req.mail, and the outbox page in development. */
function createApp(e: typeof express, mailer: Mailer) {
  const app = e();
  app.use(e.json());
  app.use(mailvia({ mailer, organisation: (req) => req.get('x-organisation') }));
  app.post('/invite', async (req, res) => {
    const receipt = await req.mail.send(req.body);
    res.status(202).json(receipt);
  });
  if (mailer.mode === 'development') app.use('/dev/outbox', mailviaOutbox({ mailer }));
  return app;
}

const invitation = (to: string, subject: string) => ({
  from: 'School A <office@school-a.example>',
  to,
  cc: 'head@school-a.example',
  subject,
  text: 'Welcome! Your temporary password is in the app.',
  html:
    '<h1 id="greeting" style="color:#3b5bdb">Welcome, parent</h1><p>Your account is ready.</p>' +
    // Must never run: the iframe is sandboxed without allow-scripts and the CSP forbids scripts.
    '<script>document.body.setAttribute("data-script-ran", "yes")</script>' +
    '<img src="https://tracker.example/pixel.gif" alt="">',
  attachments: [{ filename: 'timetable.txt', content: 'Mon: maths', contentType: 'text/plain' }],
});

describe('the outbox page in headless Chromium', () => {
  let mailer: Mailer;
  let server: Served;
  let browser: Awaited<ReturnType<typeof startChromium>>;
  let page: Page;

  const send = async (organisation: string, body: unknown) => {
    const res = await fetch(`${server.url}/invite`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-organisation': organisation },
      body: JSON.stringify(body),
    });
    expect(res.status, await res.clone().text()).toBe(202);
    return json(res);
  };

  beforeAll(async () => {
    mailer = createMailer({ mode: 'development' });
    server = await serve(createApp(express, mailer));
    browser = await startChromium();
    page = await browser.context.newPage();
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await mailer?.close();
  });

  it('lists, shows and refreshes captured mail per organisation', async () => {
    const receipt = await send('school-b', {
      from: 'office@school-b.example',
      to: 'parent.b@example.org',
      subject: 'School B newsletter',
      text: 'Plain text only.',
    });
    expect(receipt.acceptedBy).toBe('outbox');

    // Requests leaving the machine, and how each ended (the mail's CSP must stop them in the browser).
    const outside: string[] = [];
    page.on('requestfinished', (r) => {
      if (!r.url().startsWith(server.url)) outside.push(`finished ${r.url()}`);
    });
    page.on('requestfailed', (r) => {
      if (!r.url().startsWith(server.url)) outside.push(`failed ${r.url()} ${r.failure()?.errorText}`);
    });
    await page.goto(`${server.url}/dev/outbox`);
    await expect.poll(() => page.locator('#live').textContent(), POLL).toBe('live');
    await expect.poll(() => page.locator('.mail').count(), POLL).toBe(1);

    // A new mail appears without a reload (server-sent events).
    await send('school-a', invitation('parent.a@example.org', 'Your invitation to School A'));
    const mailA = page.locator('.mail', { hasText: 'Your invitation to School A' });
    await mailA.waitFor({ timeout: 10_000 });
    expect(await mailA.locator('.rcpt').textContent()).toBe('To: parent.a@example.org');
    expect(await mailA.locator('.chip').textContent()).toBe('school-a');

    // Organisations, with counts.
    expect(await page.locator('.org').allTextContents()).toEqual(['All organisations2', 'school-a1', 'school-b1']);

    await mailA.click();
    const detail = page.locator('#detail');
    await expect.poll(() => detail.locator('h2').textContent(), POLL).toBe('Your invitation to School A');
    // biome-ignore lint/performance/useDomNodeTextContent: Playwright's innerText: the text as the user sees it
    const fields = await detail.locator('.fields').innerText();
    expect(fields).toContain('office@school-a.example');
    expect(fields).toContain('parent.a@example.org');
    expect(fields).toContain('head@school-a.example');
    expect(fields).toContain('school-a');

    // Rendered HTML in the sandboxed iframe: the heading is there, the script did not run.
    const iframe = detail.locator('iframe');
    expect(await iframe.getAttribute('sandbox')).toBe('');
    const frame = page.frameLocator('#detail iframe');
    await expect.poll(() => frame.locator('#greeting').textContent(), POLL).toBe('Welcome, parent');
    expect(await frame.locator('#greeting').evaluate((h) => getComputedStyle(h).color)).toBe('rgb(59, 91, 219)');
    expect(await frame.locator('body').getAttribute('data-script-ran')).toBeNull();
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'outbox-html.png') });

    await detail.locator('[data-tab="text"]').click();
    expect(await detail.locator('pre.text').textContent()).toBe('Welcome! Your temporary password is in the app.');
    await detail.locator('[data-tab="headers"]').click();
    // biome-ignore lint/performance/useDomNodeTextContent: Playwright's innerText: the text as the user sees it
    const headers = await detail.locator('table.headers').innerText();
    expect(headers).toMatch(/Subject\s+Your invitation to School A/);
    expect(headers).toMatch(/Message-ID\s+</);
    await page.screenshot({ path: join(ARTIFACTS, 'outbox-headers.png') });
    await detail.locator('[data-tab="raw"]').click();
    expect(await detail.locator('pre.raw').textContent()).toMatch(/Content-Type: multipart\/alternative/);

    // The .eml link downloads the raw message.
    const href = await detail.locator('a.download').getAttribute('href');
    const eml = await page.request.get(new URL(href!, page.url()).href);
    expect(eml.headers()['content-type']).toBe('message/rfc822');
    expect(eml.headers()['content-disposition']).toMatch(/attachment; filename=".*\.eml"/);
    expect(await eml.text()).toMatch(/^Subject: Your invitation to School A\r$/m);

    // biome-ignore lint/performance/useDomNodeTextContent: Playwright's innerText: the text as the user sees it
    expect(await detail.locator('.attachments').innerText()).toBe('Attachments: timetable.txt (10 B)');
    const attachment = await page.request.get(
      new URL((await detail.locator('.attachments a').getAttribute('href'))!, page.url()).href,
    );
    expect(await attachment.text()).toBe('Mon: maths');
    expect(attachment.headers()['content-disposition']).toBe('attachment; filename="timetable.txt"');

    // Filtering by organisation.
    await page.locator('.org[data-org="school-b"]').click();
    await expect.poll(() => page.locator('.mail .subject').allTextContents(), POLL).toEqual(['School B newsletter']);
    await page.locator('.org[data-org="*"]').click();
    await expect.poll(() => page.locator('.mail').count(), POLL).toBe(2);
    await mailA.click();
    await detail.locator('[data-tab="html"]').click();
    await frame.locator('#greeting').waitFor();
    await page.screenshot({ path: join(ARTIFACTS, 'outbox.png') });

    // Nothing left the machine: the tracker pixel was stopped by the mail's CSP.
    expect(outside.length).toBeGreaterThan(0);
    expect(new Set(outside)).toEqual(new Set(['failed https://tracker.example/pixel.gif csp']));
  }, 90_000);
});

describe.each(EXPRESS_VERSIONS)('the outbox page over HTTP on $name', ({ express: e }) => {
  let mailer: Mailer;
  let server: Served;
  beforeAll(async () => {
    mailer = createMailer({ mode: 'development' });
    server = await serve(createApp(e, mailer));
  });
  afterAll(async () => {
    await server.close();
    await mailer.close();
  });

  it('serves the page under a strict CSP, the mail HTML sandboxed, and 404s unknown mail', async () => {
    const redirect = await fetch(`${server.url}/dev/outbox`, { redirect: 'manual' });
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get('location')).toBe('/dev/outbox/');
    const page = await fetch(`${server.url}/dev/outbox/`);
    expect(page.headers.get('content-security-policy')).toMatch(/script-src 'self'/);
    expect(await page.text()).toContain('<title>Mailvia outbox</title>');

    await mailer.send(invitation('p@example.org', 'Hello'), { organisation: 'school-a' });
    const { mails } = await json(await fetch(`${server.url}/dev/outbox/api/mails?organisation=school-a`));
    expect(mails.map((m: { subject: string }) => m.subject)).toEqual(['Hello']);
    const html = await fetch(`${server.url}/dev/outbox/mails/${mails[0].id}/html`);
    expect(html.headers.get('content-security-policy')).toMatch(/^sandbox; default-src 'none'/);
    expect(await html.text()).toContain('<h1 id="greeting"');

    const missing = await fetch(`${server.url}/dev/outbox/api/mails/nope`);
    expect(missing.status).toBe(404);
    expect((await json(missing)).error.code).toBe('not_found');

    // Clearing needs the page's header (a cross-site form cannot send it).
    expect((await fetch(`${server.url}/dev/outbox/api/clear`, { method: 'POST' })).status).toBe(403);
    const cleared = await fetch(`${server.url}/dev/outbox/api/clear`, {
      method: 'POST',
      headers: { 'x-mailvia-outbox': '1' },
    });
    expect(await json(cleared)).toEqual({ removed: 1 });
  });
});

describe('the outbox page is only for development', () => {
  it('refuses a production mailer unless forced', () => {
    const mailer = createMailer({ routes: 'capture://' });
    expect(() => mailviaOutbox({ mailer })).toThrow(/production mode/);
    expect(() => mailviaOutbox({ mailer, force: true })).not.toThrow();
  });

  it('refuses under NODE_ENV=production, even with only an outbox', () => {
    const before = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      expect(() => mailviaOutbox({ outbox: createOutbox() })).toThrow(/NODE_ENV=production/);
      expect(() => mailviaOutbox({ mailer: createMailer({ mode: 'development' }) })).toThrow(/NODE_ENV/);
    } finally {
      process.env.NODE_ENV = before;
    }
  });

  it("shows one organisation only when scoped to the request's organisation", async () => {
    const mailer = createMailer({ mode: 'development' });
    const app = express();
    app.use('/outbox', mailviaOutbox({ mailer, organisation: (req) => req.get('x-organisation') }));
    const s = await serve(app);
    try {
      await mailer.send(invitation('a@example.org', 'For A'), { organisation: 'school-a' });
      await mailer.send(invitation('b@example.org', 'For B'), { organisation: 'school-b' });
      const list = await json(await fetch(`${s.url}/outbox/api/mails`, { headers: { 'x-organisation': 'school-b' } }));
      expect(list.mails.map((m: { subject: string }) => m.subject)).toEqual(['For B']);
      const all = (await mailer.outbox.list()).find((m) => m.organisation === 'school-a')!;
      const other = await fetch(`${s.url}/outbox/mails/${all.id}/eml`, { headers: { 'x-organisation': 'school-b' } });
      expect(other.status).toBe(404);
      expect((await fetch(`${s.url}/outbox/api/mails`)).status).toBe(403);
    } finally {
      await s.close();
      await mailer.close();
    }
  });
});
