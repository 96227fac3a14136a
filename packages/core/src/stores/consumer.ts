import { randomUUID } from 'node:crypto';
import type { JobOutcome, MaybePromise, ProcessOptions, QueueConsumer, QueueJob } from './types.js';

/** The few steps a polling queue store gives {@link runConsumer}. */
export interface ClaimSource {
  /** Takes up to `n` due jobs (waiting and due, or active with an expired lease) for `owner`. */
  claim(owner: string, n: number, leaseUntil: number, now: number): MaybePromise<QueueJob[]>;
  /** Extends the lease of jobs `owner` holds. */
  renew(owner: string, ids: string[], leaseUntil: number): MaybePromise<void>;
  /** Applies an outcome to a job `owner` holds. */
  finish(owner: string, id: string, outcome: JobOutcome): MaybePromise<void>;
  /** Epoch ms of the earliest waiting job or expiring lease, for sleeping until then. */
  nextDue(now: number): MaybePromise<number | undefined>;
}

/** A wake-up bell: stores ring it when a job is added in this process. */
export class Bell {
  private listeners = new Set<() => void>();
  ring(): void {
    for (const l of this.listeners) l();
  }
  wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.listeners.add(done);
    });
  }
}

/**
 * The consumer loop of polling stores (memory, SQLite): takes due jobs up to `concurrency`,
 * renews their leases while the handler runs, applies outcomes, sleeps until the next due job
 * (at most `pollInterval`, or until the bell rings).
 */
export function runConsumer(
  source: ClaimSource,
  handler: (job: QueueJob) => Promise<JobOutcome>,
  options: ProcessOptions,
  bell: Bell,
): QueueConsumer {
  const owner = randomUUID();
  const concurrency = Math.max(1, options.concurrency ?? 4);
  const lease = Math.max(100, options.lease ?? 30_000);
  const poll = Math.max(5, options.pollInterval ?? 250);
  const held = new Set<string>();
  const running = new Set<Promise<void>>();
  let stopped = false;

  const renewal = setInterval(
    () => {
      if (held.size) void Promise.resolve(source.renew(owner, [...held], Date.now() + lease)).catch(() => {});
    },
    Math.max(50, Math.floor(lease / 3)),
  );
  renewal.unref?.();

  const start = (job: QueueJob) => {
    held.add(job.id);
    const p = (async () => {
      let outcome: JobOutcome;
      try {
        outcome = await handler(job);
      } catch {
        // a handler bug: the job stays leased and comes back after the lease, uncounted
        held.delete(job.id);
        return;
      }
      try {
        await source.finish(owner, job.id, outcome);
      } finally {
        held.delete(job.id);
      }
    })()
      .catch(() => {})
      .finally(() => {
        running.delete(p);
        bell.ring();
      });
    running.add(p);
  };

  const loop = (async () => {
    while (!stopped) {
      const free = concurrency - running.size;
      let took = 0;
      if (free > 0) {
        try {
          const now = Date.now();
          const jobs = await source.claim(owner, free, now + lease, now);
          took = jobs.length;
          for (const job of jobs) start(job);
        } catch {
          // a busy or closing store: try again after a pause
        }
      }
      if (stopped) break;
      if (free > 0 && took === free) continue;
      let sleep = poll;
      if (free > 0) {
        try {
          const next = await source.nextDue(Date.now());
          if (next !== undefined) sleep = Math.min(poll, Math.max(0, next - Date.now()));
        } catch {
          // poll again later
        }
      }
      await bell.wait(sleep);
    }
  })();

  return {
    async stop() {
      stopped = true;
      bell.ring();
      await loop;
      await Promise.allSettled([...running]);
      clearInterval(renewal);
    },
  };
}
