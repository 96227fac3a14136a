import type { MailerStores } from '@mailvia/core';
import { Redis } from 'ioredis';
import { type RedisStoreOptions, type ResolvedRedisOptions, resolveOptions } from './config.js';
import { RedisDeliveryLog } from './log.js';
import { RedisQueue } from './queue.js';
import { RedisRouteState } from './state.js';
import { RedisSuppressionList } from './suppression.js';

/** What {@link redisStores} returns: spread it into `createMailer`. */
export interface RedisStores extends Required<MailerStores> {
  queue: RedisQueue;
  log: RedisDeliveryLog;
  suppression: RedisSuppressionList;
  state: RedisRouteState;
  /** The ioredis connection of the log, state and suppression list. */
  redis: Redis;
  options: ResolvedRedisOptions;
}

/**
 * Every Mailvia store in Redis, for many app instances and workers: the queue on BullMQ, quota
 * counters and resting routes with Lua-atomic steps, the delivery log and the suppression list.
 *
 * @example
 * ```ts
 * import { createMailer } from '@mailvia/core';
 * import { redisStores } from '@mailvia/redis';
 *
 * const mailer = createMailer({ ...redisStores({ connection: process.env.REDIS_URL, prefix: 'myapp' }), organisations });
 * mailer.startWorker({ concurrency: 8 }); // in as many processes as you like
 * await mailer.enqueue(message, { organisation: 'school-a', idempotencyKey: 'welcome:42' });
 * ```
 */
export function redisStores(options: RedisStoreOptions = {}): RedisStores {
  const resolved = resolveOptions(options);
  const redis = new Redis({ ...resolved.connection, enableAutoPipelining: true, lazyConnect: false });
  redis.on('error', () => {});
  const queue = new RedisQueue(resolved);
  const log = new RedisDeliveryLog(redis, resolved.prefix, queue.batch, queue, resolved.outcomeDelay);
  // the log reads the queue's jobs, so an enqueue's record rides in its job, and the queue
  // writes sent outcomes to the log
  queue.recordLog = log;
  return {
    queue,
    log,
    suppression: new RedisSuppressionList(redis, resolved.prefix),
    state: new RedisRouteState(redis, resolved.prefix),
    redis,
    options: resolved,
    async close() {
      await queue.close();
      redis.disconnect();
    },
  };
}
