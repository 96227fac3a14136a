import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMailer } from '@mailvia/core';
import { freePort, startSmtpSink } from '@mailvia/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { freshStores, requireRedis } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'mailvia-redis-'));
let server: ChildProcess | undefined;
afterAll(() => {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** Our own redis-server (not the machine's shared one), persisting every write before it answers. */
async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--appendfsync',
      'always',
      '--save',
      '',
      '--daemonize',
      'no',
    ],
    { stdio: 'ignore' },
  );
  await new Promise<void>((resolve, reject) => {
    child.once('error', (e) =>
      reject(new Error(`redis-server could not start (apt-get install redis-server): ${e.message}`)),
    );
    child.once('spawn', () => resolve());
  });
  await requireRedisSoon(`redis://127.0.0.1:${port}`);
  return child;
}

async function requireRedisSoon(url: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await requireRedis(url);
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

describe('Redis restarted (kill -9) in the middle of a run', () => {
  it('loses no mail whose enqueue was acknowledged (appendonly yes, appendfsync always)', async () => {
    const port = await freePort();
    server = await startRedis(port);
    const sink = await startSmtpSink({ starttls: false });
    const stores = freshStores({ connection: `redis://127.0.0.1:${port}` });
    const mailer = createMailer({
      ...stores,
      routes: [{ type: 'smtp', host: '127.0.0.1', port: sink.port, name: 'relay' }],
      delivery: { backoff: { initial: 100, max: 1000 } },
      rest: { unavailable: 200 },
    });
    const acknowledged: { id: string; messageId: string }[] = [];
    let refused = 0;
    let restarted = false;
    const enqueueBatch = async (batch: number) => {
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, (_x, i) =>
          mailer.enqueue({
            from: 'school@example.org',
            to: 'parent@example.org',
            subject: `mail ${batch * 10 + i}`,
            text: 'hello',
          }),
        ),
      );
      for (const r of results) {
        if (r.status === 'fulfilled') acknowledged.push({ id: r.value.id, messageId: r.value.messageId! });
        else refused++;
      }
    };
    try {
      // a backlog of 100 acknowledged mails, then the worker starts on it
      for (let batch = 0; batch < 10; batch++) await enqueueBatch(batch);
      mailer.startWorker({ concurrency: 2, lease: 2000 });
      await sink.waitFor(20, 20_000);
      // kill -9 the server with most of the backlog still queued, and bring it back while enqueues go on
      server.kill('SIGKILL');
      const backlog = 100 - sink.received.length;
      void new Promise((r) => setTimeout(r, 700)).then(async () => {
        server = await startRedis(port);
        restarted = true;
      });
      for (let batch = 10; batch < 30; batch++) await enqueueBatch(batch);
      expect(backlog).toBeGreaterThan(30);
      await new Promise<void>((resolve, reject) => {
        const deadline = Date.now() + 60_000;
        const tick = () => {
          const got = new Set(sink.received.map((m) => m.parsed.messageId));
          if (acknowledged.every((a) => got.has(a.messageId))) return resolve();
          if (Date.now() > deadline)
            return reject(
              new Error(`${acknowledged.filter((a) => !got.has(a.messageId)).length} acknowledged mails never arrived`),
            );
          setTimeout(tick, 50);
        };
        tick();
      });
      expect(restarted).toBe(true);
      expect(acknowledged.length + refused).toBe(300);
      expect(acknowledged.length).toBeGreaterThan(250);
      // a second copy only where the log says the outcome was unknown
      const counts = new Map<string, number>();
      for (const m of sink.received) counts.set(m.parsed.messageId!, (counts.get(m.parsed.messageId!) ?? 0) + 1);
      for (const a of acknowledged) {
        const n = counts.get(a.messageId)!;
        if (n > 1) expect((await mailer.log!.get(a.id))?.unknown).toBe(true);
        expect(n).toBeLessThanOrEqual(2);
      }
      // and the log says so: outcomes due while Redis was away reach it once it is back
      const deadline = Date.now() + 15_000;
      const pending = async () =>
        (await Promise.all(acknowledged.map((a) => mailer.log!.get(a.id)))).filter((r) => r?.status !== 'sent').length;
      while ((await pending()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(await pending()).toBe(0);
    } finally {
      await mailer.close();
      await stores.close();
      await sink.close();
      server.kill('SIGKILL');
    }
  }, 120_000);
});
