import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { type FailureKind, MailError } from '../errors.js';
import { prepareMessage } from '../message.js';
import type { Transport } from '../spec.js';

/** A mail as a peer saw it, as far as the suite checks it. */
export interface ConformanceMail {
  subject: string;
  from?: string;
  to?: string[];
  text?: string;
}

/** What {@link transportConformance} needs: a route, a real peer, and ways to make it fail. */
export interface ConformanceOptions {
  /** Shown in the test names. */
  name: string;
  /** A route pointed at a working peer. Called for each test; closed after it. */
  create: () => Transport | Promise<Transport>;
  /** What the peer received so far (read back from the peer, not from the route). */
  received?: () => ConformanceMail[] | Promise<ConformanceMail[]>;
  /** A sender the peer accepts. @default 'sender@example.org' */
  from?: string;
  /** Recipients the peer accepts. @default ['rcpt@example.org'] */
  to?: string[];
  /** Routes that fail against their peer with each kind the peer can produce. */
  failures?: Partial<Record<FailureKind, () => Transport | Promise<Transport>>>;
  /** Secrets of the routes: none may appear in a name, error message or error JSON. */
  secrets?: string[];
  /** What a receipt's `acceptedBy` must say. @default 'provider' */
  acceptedBy?: 'provider' | 'relay' | 'outbox';
  /** Whether the route implements `verify()`. @default true */
  verify?: boolean;
  /** How long to wait for the peer to show a mail. @default 5000 */
  receiveTimeout?: number;
}

async function eventually<T>(read: () => T | Promise<T>, ok: (v: T) => boolean, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * The conformance suite every route package runs against a real peer: success receipts, what
 * the peer received, each failure kind the peer can produce, abort, verify, close, no secrets.
 *
 * @example
 * ```ts
 * transportConformance({ name: 'smtp', create: () => smtp({ host: sink.host, port: sink.port }), received: () => sink.received.map(…) });
 * ```
 */
export function transportConformance(options: ConformanceOptions): void {
  const from = options.from ?? 'sender@example.org';
  const to = options.to ?? ['rcpt@example.org'];
  const open: Transport[] = [];
  const make = async (factory: () => Transport | Promise<Transport>) => {
    const t = await factory();
    open.push(t);
    return t;
  };
  const message = (tag: string) =>
    prepareMessage({
      from,
      to,
      subject: `conformance ${tag} ${randomUUID()}`,
      text: `Body of ${tag}: héllo wörld`,
      html: `<p>Body of <b>${tag}</b></p>`,
    });
  const noSecret = (text: string) => {
    for (const s of options.secrets ?? []) expect(text).not.toContain(s);
  };

  describe(`${options.name}: route conformance`, () => {
    afterAll(async () => {
      await Promise.allSettled(open.map((t) => t.close?.()));
    });

    it('implements the v1 contract with a name that carries no secret', async () => {
      const t = await make(options.create);
      expect(t.specificationVersion).toBe('v1');
      expect(typeof t.name).toBe('string');
      expect(t.name.length).toBeGreaterThan(0);
      noSecret(t.name);
    });

    it('sends: the receipt names the route, the Message-ID and the accepted recipients', async () => {
      const t = await make(options.create);
      const m = message('send');
      const receipt = await t.send(m);
      expect(receipt.route).toBe(t.name);
      expect(receipt.messageId).toBe(m.messageId);
      expect([...receipt.accepted].sort()).toEqual([...to].sort());
      expect(receipt.rejected).toEqual([]);
      expect(receipt.acceptedBy).toBe(options.acceptedBy ?? 'provider');
      expect(receipt.attempts.at(-1)?.ok).toBe(true);
      if (options.received) {
        const mails = await eventually(
          options.received,
          (l) => l.some((x) => x.subject === m.subject),
          options.receiveTimeout ?? 5000,
        );
        const got = mails.find((x) => x.subject === m.subject);
        expect(got, 'the peer received the mail').toBeDefined();
        if (got?.from !== undefined) expect(got.from).toBe(from);
        if (got?.to !== undefined) expect([...got.to].sort()).toEqual([...to].sort());
        if (got?.text !== undefined) expect(got.text).toContain('héllo wörld');
      }
    });

    it('sends twice on one route (connections are reused or reopened)', async () => {
      const t = await make(options.create);
      const a = await t.send(message('first'));
      const b = await t.send(message('second'));
      expect(a.messageId).not.toBe(b.messageId);
    });

    for (const [kind, factory] of Object.entries(options.failures ?? {}) as [FailureKind, () => Transport][]) {
      it(`fails with kind "${kind}" and says why`, async () => {
        const t = await make(factory);
        const err: unknown = await t.send(message(`fail-${kind}`)).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(MailError.isInstance(err), `expected a MailError, got ${String(err)}`).toBe(true);
        const e = err as MailError;
        expect(e.kind).toBe(kind);
        expect(e.message.length).toBeGreaterThan(10);
        noSecret(e.message);
        noSecret(JSON.stringify(e));
      });
    }

    it('honours an aborted signal: nothing reaches the peer', async () => {
      const t = await make(options.create);
      const m = message('abort');
      const ac = new AbortController();
      ac.abort();
      const err: unknown = await t.send(m, { signal: ac.signal }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(MailError.isInstance(err)).toBe(true);
      if (options.received) {
        await new Promise((r) => setTimeout(r, 200));
        const mails = await options.received();
        expect(mails.some((x) => x.subject === m.subject)).toBe(false);
      }
    });

    if (options.verify !== false) {
      it('verify() resolves for a working route', async () => {
        const t = await make(options.create);
        await expect(t.verify?.()).resolves.toBeUndefined();
      });
      const broken = options.failures?.unavailable ?? options.failures?.misconfigured;
      if (broken) {
        it('verify() rejects with a MailError for a broken route', async () => {
          const t = await make(broken);
          const err: unknown = await t.verify?.().then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(MailError.isInstance(err)).toBe(true);
          noSecret((err as Error).message);
        });
      }
    }

    it('close() is idempotent and the route works again afterwards', async () => {
      const t = await make(options.create);
      await t.send(message('before-close'));
      await t.close?.();
      await t.close?.();
      const r = await t.send(message('after-close'));
      expect(r.accepted.length).toBeGreaterThan(0);
    });
  });
}
