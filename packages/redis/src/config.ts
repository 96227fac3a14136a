import { RouteConfigError } from '@mailvia/core';
import type { RedisOptions } from 'ioredis';

/** Options of {@link redisStores}. */
export interface RedisStoreOptions {
  /**
   * Where Redis is: a `redis://` / `rediss://` URL or ioredis options. The stores open their own
   * connections (BullMQ needs blocking ones) and close them on `close()`.
   * @default 'redis://127.0.0.1:6379'
   */
  connection?: string | RedisOptions;
  /**
   * Prefix of every key (BullMQ's too). Give each application (and each test) its own. For
   * Redis Cluster use a hash tag, e.g. `{mailvia}`, so the keys share a slot.
   * @default 'mailvia'
   */
  prefix?: string;
  /** BullMQ queue name. @default 'mail' */
  queueName?: string;
  /** How long a sent job (its idempotency key, and its message) is kept (ms). @default 24 hours */
  idempotencyWindow?: number;
  /** How long a dead job (and its message) is kept for `resend` (ms). @default 30 days */
  deadRetention?: number;
  /**
   * How long a worker gathers the outcomes of sent mail before writing them to the delivery log
   * in one call (ms). Each outcome is already stored with its job's completion; a worker that
   * dies before writing them has them written by the next worker to start. @default 20
   */
  outcomeDelay?: number;
}

/** The options with defaults filled in. */
export interface ResolvedRedisOptions {
  connection: RedisOptions;
  prefix: string;
  queueName: string;
  idempotencyWindow: number;
  deadRetention: number;
  outcomeDelay: number;
}

/** Fills defaults and turns a URL into ioredis options (the password never appears in an error). */
export function resolveOptions(options: RedisStoreOptions = {}): ResolvedRedisOptions {
  const raw = options.connection ?? 'redis://127.0.0.1:6379';
  let connection: RedisOptions;
  if (typeof raw === 'string') {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new RouteConfigError('connection', 'is not a redis:// URL');
    }
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:')
      throw new RouteConfigError('connection', `the scheme must be redis: or rediss: (got ${url.protocol})`);
    const db = url.pathname.replace(/^\//, '');
    if (db !== '' && !/^\d+$/.test(db))
      throw new RouteConfigError('connection.db', `${JSON.stringify(db)} is not a number`);
    connection = {
      host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
      port: url.port ? Number(url.port) : 6379,
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      ...(db ? { db: Number(db) } : {}),
      ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
    };
  } else connection = { ...raw };
  const prefix = options.prefix ?? 'mailvia';
  if (!prefix || /\s/.test(prefix)) throw new RouteConfigError('prefix', 'must be a non-empty string without spaces');
  const queueName = options.queueName ?? 'mail';
  if (!/^[A-Za-z0-9_-]+$/.test(queueName))
    throw new RouteConfigError('queueName', 'may hold letters, digits, - and _ only');
  const outcomeDelay = options.outcomeDelay ?? 20;
  if (!Number.isFinite(outcomeDelay) || outcomeDelay < 0)
    throw new RouteConfigError('outcomeDelay', `must be a number of ms, 0 or more (got ${outcomeDelay})`);
  return {
    connection,
    prefix,
    queueName,
    idempotencyWindow: options.idempotencyWindow ?? 86_400_000,
    deadRetention: options.deadRetention ?? 30 * 86_400_000,
    outcomeDelay,
  };
}
