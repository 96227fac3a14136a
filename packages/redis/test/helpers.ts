import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { type RedisStoreOptions, redisStores } from '../src/index.js';

/** The machine's Redis (tests use their own key prefix on it). */
export const REDIS_URL = process.env.MAILVIA_TEST_REDIS ?? 'redis://127.0.0.1:6379';

/** Fails with a clear message when Redis is not there (it must be, in CI). */
export async function requireRedis(url = REDIS_URL): Promise<void> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  try {
    await r.connect();
    await r.ping();
  } catch (e) {
    throw new Error(
      `these tests need a Redis server at ${url} (apt-get install redis-server): ${(e as Error).message}`,
    );
  } finally {
    r.disconnect();
  }
}

/** Deletes every key under a prefix. */
export async function dropPrefix(prefix: string, url = REDIS_URL): Promise<void> {
  const r = new Redis(url);
  r.on('error', () => {});
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await r.del(...keys);
  } while (cursor !== '0');
  r.disconnect();
}

/** Stores under a fresh prefix, whose keys are deleted on close. */
export function freshStores(options: RedisStoreOptions = {}) {
  const prefix = options.prefix ?? `mvtest-${randomUUID().slice(0, 8)}`;
  const stores = redisStores({ connection: REDIS_URL, ...options, prefix });
  const close = stores.close;
  return {
    ...stores,
    prefix,
    async close() {
      await close();
      await dropPrefix(prefix, typeof options.connection === 'string' ? options.connection : REDIS_URL);
    },
  };
}
