import type { SuppressionEntry, SuppressionList } from '@mailvia/core';
import type { Redis } from 'ioredis';

/** The suppression list in Redis: a hash of entries and a sorted set by time, per organisation. */
export class RedisSuppressionList implements SuppressionList {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private keys(organisation: string): [string, string] {
    return [`${this.prefix}:sup:${organisation}`, `${this.prefix}:supi:${organisation}`];
  }

  async add(entry: SuppressionEntry): Promise<void> {
    const e = { ...entry, address: entry.address.toLowerCase() };
    const [hash, index] = this.keys(e.organisation);
    await this.redis.multi().hset(hash, e.address, JSON.stringify(e)).zadd(index, e.createdAt, e.address).exec();
  }

  async has(organisation: string, address: string): Promise<SuppressionEntry | undefined> {
    const v = await this.redis.hget(this.keys(organisation)[0], address.toLowerCase());
    return v ? (JSON.parse(v) as SuppressionEntry) : undefined;
  }

  async list(organisation: string, options: { limit?: number; offset?: number } = {}): Promise<SuppressionEntry[]> {
    const [hash, index] = this.keys(organisation);
    const offset = options.offset ?? 0;
    const addresses = await this.redis.zrevrange(index, offset, offset + (options.limit ?? 100) - 1);
    if (addresses.length === 0) return [];
    const values = await this.redis.hmget(hash, ...addresses);
    return values.filter((v): v is string => v !== null).map((v) => JSON.parse(v) as SuppressionEntry);
  }

  async remove(organisation: string, address: string): Promise<boolean> {
    const [hash, index] = this.keys(organisation);
    const a = address.toLowerCase();
    const r = await this.redis.multi().hdel(hash, a).zrem(index, a).exec();
    return Number(r?.[0]?.[1] ?? 0) === 1;
  }
}
