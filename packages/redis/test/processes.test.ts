import { createMailer, type RouteSpec } from '@mailvia/core';
import { type SmtpSink, startSmtpSink } from '@mailvia/core/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redisStores } from '../src/index.js';
import { killChildren, mail, startFixture, startWorker, until } from './children.js';
import { freshStores, REDIS_URL, requireRedis } from './helpers.js';

const sinks: SmtpSink[] = [];
beforeAll(() => requireRedis());
afterAll(async () => {
  killChildren();
  for (const s of sinks) await s.close();
});

describe('two worker processes sharing one Redis queue, route state and quota', () => {
  it('skip a route the other found down without connecting, and never exceed a shared daily quota of 100', async () => {
    const quotaSink = await startSmtpSink({ starttls: false });
    const down = await startSmtpSink({
      starttls: false,
      behaviour: (stage) => (stage === 'connect' ? { code: 421, message: '4.3.2 Service not available' } : undefined),
    });
    const healthy = await startSmtpSink({ starttls: false });
    sinks.push(quotaSink, down, healthy);
    const smtp = (s: SmtpSink, name: string, extra: Record<string, unknown> = {}) => ({
      type: 'smtp',
      host: '127.0.0.1',
      port: s.port,
      name,
      ...extra,
    });
    const routes: Record<string, RouteSpec> = {
      school: [smtp(quotaSink, 'gmail-a', { quota: { perDay: 100 } })],
      relay: [smtp(down, 'relay-x'), smtp(healthy, 'relay-b')],
    };
    const stores = freshStores();
    const app = createMailer({ ...stores, organisations: (id) => routes[id] });
    const config = { redis: REDIS_URL, prefix: stores.prefix, routes, concurrency: 4, lease: 2000 };
    try {
      // worker 1 finds relay-x down (421) and falls over to relay-b; the rest is kept in Redis
      const w1 = await startWorker(config);
      const first = await app.enqueue(mail('down-1'), { organisation: 'relay' });
      await healthy.waitFor(1, 20_000);
      expect(down.connections).toBe(1);
      await until(() => w1.sent.includes(first.messageId!), 10_000, 'worker 1 to report its send');
      // worker 2 alone now: it skips relay-x without a connection
      const w2 = await startWorker(config);
      await w1.stop();
      const second = await app.enqueue(mail('down-2'), { organisation: 'relay' });
      await healthy.waitFor(2, 20_000);
      await until(() => w2.sent.includes(second.messageId!), 10_000, 'worker 2 to report its send');
      expect(down.connections).toBe(1);
      const rec = (await app.log!.get(second.id))!;
      expect(rec.history.map((a) => [a.route, a.status])).toEqual([
        ['relay-x', 'skipped'],
        ['relay-b', 'ok'],
      ]);

      // both workers on 150 mails against one daily quota of 100
      const w3 = await startWorker(config);
      const ids = await Promise.all(
        Array.from({ length: 150 }, (_x, i) => app.enqueue(mail(`quota-${i}`), { organisation: 'school' })),
      );
      await quotaSink.waitFor(100, 30_000);
      await until(
        async () =>
          (await app.log!.query({ organisation: 'school', status: 'queued', limit: 500 })).filter(
            (r) => r.kind === 'limited',
          ).length === 50,
        30_000,
        '50 mails waiting for the quota',
      );
      await new Promise((r) => setTimeout(r, 500));
      expect(quotaSink.received).toHaveLength(100);
      await until(() => w2.sent.length + w3.sent.length >= 101, 10_000, 'the workers to report their sends');
      const mine = new Set(ids.map((r) => r.messageId));
      const by2 = w2.sent.filter((m) => mine.has(m)).length;
      const by3 = w3.sent.filter((m) => mine.has(m)).length;
      expect(by2 + by3).toBe(100);
      expect(by2).toBeGreaterThan(0);
      expect(by3).toBeGreaterThan(0);
      // the waiting ones wait for the next UTC day and have used no attempt
      const waiting = await app.log!.query({ organisation: 'school', status: 'queued', limit: 500 });
      const midnight = Math.ceil(Date.now() / 86_400_000) * 86_400_000;
      for (const r of waiting) {
        expect(r.attempts).toBe(0);
        expect(r.nextAttemptAt).toBeGreaterThanOrEqual(midnight);
      }
      const usage = await stores.state.consume('quota:school:gmail-a', { type: 'fixed', ms: 86_400_000 }, 100, {
        amount: 0,
      });
      expect(usage.used).toBe(100);
      await w2.stop();
      await w3.stop();
    } finally {
      await app.close();
      await stores.close();
    }
  }, 120_000);
});

describe('a worker process killed (kill -9) after sending, before its outcomes reached the log', () => {
  it('has them written from the queue by the next worker; nothing is sent again', async () => {
    // one mail is deferred once: its record gets a failure reason, which its outcome then removes
    let deferred = 0;
    const sink = await startSmtpSink({
      starttls: false,
      behaviour: (stage, d) =>
        stage === 'data' && d.mail?.parsed.subject === 'deferred once' && deferred++ === 0
          ? { code: 451, message: '4.3.0 Try again later' }
          : undefined,
    });
    sinks.push(sink);
    const stores = freshStores();
    const route: RouteSpec = { type: 'smtp', name: 'relay', host: '127.0.0.1', port: sink.port };
    const app = createMailer({ ...stores, organisations: () => [route] });
    try {
      const ids = await Promise.all(
        Array.from({ length: 20 }, (_x, i) =>
          app.enqueue(mail(`report ${i}`), { organisation: 'school' }).then((r) => r.id),
        ),
      );
      const flaky = (await app.enqueue(mail('deferred once'), { organisation: 'school' })).id;
      // this worker holds its outcomes for ten minutes: they are only in the queue when it dies
      const w = await startWorker({
        redis: REDIS_URL,
        prefix: stores.prefix,
        routes: { school: [route] },
        outcomeDelay: 600_000,
        // nor does its own repair (once per lease) write them before it dies
        lease: 600_000,
        rest: 100,
      });
      await until(async () => (await stores.queue.counts()).sent === 21, 30_000, '21 completed jobs');
      expect(sink.received).toHaveLength(21);
      const statuses = async () =>
        (await Promise.all([...ids, flaky].map((id) => stores.log.get(id)))).map((r) => r?.status);
      expect(new Set(await statuses())).toEqual(new Set(['sending']));
      const exited = new Promise((r) => w.child.once('exit', r));
      w.child.kill('SIGKILL');
      await exited;

      app.startWorker();
      await until(async () => (await statuses()).every((s) => s === 'sent'), 15_000, 'the outcomes in the log');
      for (const id of ids) {
        const r = (await stores.log.get(id))!;
        expect(r).toMatchObject({
          status: 'sent',
          route: 'relay',
          attempts: 1,
          unknown: false,
          acceptedBy: 'provider',
        });
        expect(r.history.map((a) => [a.status, a.route])).toEqual([['ok', 'relay']]);
        expect(r.history[0]!.response).toMatch(/^250/);
      }
      const retried = (await stores.log.get(flaky))!;
      expect(retried).toMatchObject({ status: 'sent', attempts: 2 });
      expect(retried.reason).toBeUndefined();
      expect(retried.nextAttemptAt).toBeUndefined();
      const history = retried.history.map((a) => a.status);
      expect([history[0], history.at(-1)]).toEqual(['failed', 'ok']);
      expect((await stores.log.query({ organisation: 'school', status: 'sent', limit: 50 })).length).toBe(21);
      // and drops the messages it sent: the dead worker could not
      const jobs = () => Promise.all([...ids, flaky].map((id) => stores.queue.queue.getJob(id)));
      await until(
        async () => (await jobs()).every((j) => j && j.data.message === undefined),
        5_000,
        'the sent messages dropped from their jobs',
      );
      await new Promise((r) => setTimeout(r, 300));
      expect(sink.received).toHaveLength(21);
    } finally {
      await app.close();
      await stores.close();
    }
  });

  it('a worker that stops writes the outcomes it holds before it closes', async () => {
    const sink = await startSmtpSink({ starttls: false });
    sinks.push(sink);
    // the reader's close deletes the keys; the mailer's own close leaves them to read
    const reader = freshStores();
    const stores = redisStores({ connection: REDIS_URL, prefix: reader.prefix, outcomeDelay: 600_000 });
    const mailer = createMailer({
      ...stores,
      organisations: () => [{ type: 'smtp', name: 'relay', host: '127.0.0.1', port: sink.port }],
    });
    try {
      const ids = await Promise.all(
        [1, 2, 3].map((i) => mailer.enqueue(mail(`notice ${i}`), { organisation: 'school' }).then((r) => r.id)),
      );
      mailer.startWorker({ lease: 600_000 }); // its repair (once per lease) waits too
      await until(async () => (await stores.queue.counts()).sent === 3, 15_000, '3 completed jobs');
      expect((await reader.log.get(ids[0]!))?.status).toBe('sending');
      await mailer.close();
      for (const id of ids) expect((await reader.log.get(id))?.status).toBe('sent');
      expect(sink.received).toHaveLength(3);
    } finally {
      await reader.close();
    }
  });
});

describe('an enqueuing process killed (kill -9) in the middle of many enqueues', () => {
  it('leaves no job without its delivery record and no queued record without its job; every acknowledged one is whole', async () => {
    const stores = freshStores();
    const acked: string[] = [];
    const child = startFixture(
      'enqueuer',
      { MAILVIA_ENQUEUER: JSON.stringify({ redis: REDIS_URL, prefix: stores.prefix }) },
      (line) => {
        if (line.startsWith('acked ')) acked.push(line.slice(6));
      },
    );
    try {
      await until(() => acked.length >= 1500, 30_000, '1,500 acknowledged enqueues');
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      const jobs = new Set(
        (await stores.queue.queue.getJobs(['waiting', 'delayed', 'prioritized'], 0, -1)).map((j) => String(j.id)),
      );
      const records = new Set((await stores.log.query({ status: 'queued', limit: 1_000_000 })).map((r) => r.id));
      expect(jobs.size).toBeGreaterThanOrEqual(acked.length);
      expect([...jobs].filter((id) => !records.has(id))).toEqual([]);
      expect([...records].filter((id) => !jobs.has(id))).toEqual([]);
      expect(acked.filter((id) => !jobs.has(id))).toEqual([]);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await stores.close();
    }
  });
});
