import {
  type AttemptRecord,
  type DeliveryDetails,
  type DeliveryLog,
  type DeliveryQuery,
  type DeliveryRecord,
  matchesQuery,
  type RetentionPolicy,
} from '@mailvia/core';
import type { Redis } from 'ioredis';
import { script } from './scripts.js';

// KEYS: record, all, org, new status, unknown, recipient indexes…
// ARGV: data, status, id, score, unknown (0/1), status index prefix
const PUT = `
local old = redis.call('HGET', KEYS[1], 'status')
if old and old ~= ARGV[2] then redis.call('ZREM', ARGV[6] .. old, ARGV[3]) end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'status', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[5], ARGV[4], ARGV[3]) else redis.call('ZREM', KEYS[5], ARGV[3]) end
for i = 6, #KEYS do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[3]) end
return 1`;

// KEYS: record, old status index, new status index, unknown
// ARGV: expected version, data, status, id, score, unknown (0/1)
const UPDATE = `
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
if v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'status', ARGV[3], 'v', tostring(tonumber(v) + 1))
if KEYS[2] ~= KEYS[3] then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
end
if ARGV[6] == '1' then redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4]) else redis.call('ZREM', KEYS[4], ARGV[4]) end
return 1`;

/**
 * The delivery log in Redis: a hash per delivery (its JSON and a version for compare-and-set
 * updates), a hash of its attempts, and sorted sets by creation time per organisation, status,
 * recipient and unknown outcome for queries.
 */
export class RedisDeliveryLog implements DeliveryLog {
  private readonly putScript = script(PUT, 5);
  private readonly updateScript = script(UPDATE, 4);

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private k(...parts: string[]): string {
    return `${this.prefix}:log:${parts.join(':')}`;
  }

  async put(record: DeliveryRecord): Promise<void> {
    const keys = [
      this.k('d', record.id),
      this.k('i', 'all'),
      this.k('i', 'org', record.organisation ?? ''),
      this.k('i', 'st', record.status),
      this.k('i', 'unknown'),
      ...[...new Set(record.recipients.map((a) => a.toLowerCase()))].map((a) => this.k('i', 'rc', a)),
    ];
    await this.putScript(this.redis, keys, [
      JSON.stringify(record),
      record.status,
      record.id,
      record.createdAt,
      record.unknown ? 1 : 0,
      this.k('i', 'st', ''),
    ]);
  }

  async update(id: string, patch: Partial<Omit<DeliveryRecord, 'id'>>): Promise<boolean> {
    for (let tries = 0; tries < 20; tries++) {
      const [data, v, status] = await this.redis.hmget(this.k('d', id), 'data', 'v', 'status');
      if (data == null || v == null || status == null) return false;
      const next = { ...(JSON.parse(data) as DeliveryRecord), ...patch };
      for (const [key, value] of Object.entries(patch))
        if (value === undefined) delete (next as Record<string, unknown>)[key];
      const r = Number(
        await this.updateScript(
          this.redis,
          [this.k('d', id), this.k('i', 'st', status), this.k('i', 'st', next.status), this.k('i', 'unknown')],
          [v, JSON.stringify(next), next.status, id, next.createdAt, next.unknown ? 1 : 0],
        ),
      );
      if (r === 1) return true;
      if (r === -1) return false;
    }
    throw new Error(`the delivery log record ${id} kept changing under an update`);
  }

  async putAttempt(attempt: AttemptRecord): Promise<void> {
    await this.redis.hset(this.k('a', attempt.deliveryId), attempt.id, JSON.stringify(attempt));
  }

  async get(id: string): Promise<DeliveryDetails | undefined> {
    const [[, data], [, attempts]] = (await this.redis
      .multi()
      .hget(this.k('d', id), 'data')
      .hvals(this.k('a', id))
      .exec()) as [[unknown, string | null], [unknown, string[]]];
    if (!data) return undefined;
    const history = attempts.map((a) => JSON.parse(a) as AttemptRecord).sort((a, b) => a.startedAt - b.startedAt);
    return { ...(JSON.parse(data) as DeliveryRecord), history };
  }

  private indexFor(q: DeliveryQuery): string {
    if (q.recipient !== undefined) return this.k('i', 'rc', q.recipient.toLowerCase());
    if (q.organisation !== undefined) return this.k('i', 'org', q.organisation);
    if (typeof q.status === 'string') return this.k('i', 'st', q.status);
    if (q.unknown === true) return this.k('i', 'unknown');
    return this.k('i', 'all');
  }

  async query(q: DeliveryQuery = {}): Promise<DeliveryRecord[]> {
    const want = (q.offset ?? 0) + (q.limit ?? 100);
    const max = q.until !== undefined ? `(${q.until}` : '+inf';
    const min = q.since !== undefined ? String(q.since) : '-inf';
    const index = this.indexFor(q);
    const out: DeliveryRecord[] = [];
    const page = 200;
    for (let offset = 0; out.length < want; offset += page) {
      const ids = await this.redis.zrange(index, max, min, 'BYSCORE', 'REV', 'LIMIT', offset, page);
      if (ids.length === 0) break;
      const pipe = this.redis.pipeline();
      for (const id of ids) pipe.hget(this.k('d', id), 'data');
      const rows = (await pipe.exec()) ?? [];
      for (const [, data] of rows) {
        if (typeof data !== 'string') continue;
        const r = JSON.parse(data) as DeliveryRecord;
        if (matchesQuery(r, q)) out.push(r);
        if (out.length >= want) break;
      }
      if (ids.length < page) break;
    }
    return out.slice(q.offset ?? 0, want);
  }

  async prune(policy: RetentionPolicy): Promise<number> {
    let deleted = 0;
    const all = this.k('i', 'all');
    // records past retention (not queued or sending)
    for (let offset = 0; ; ) {
      const ids = await this.redis.zrange(all, '-inf', `(${policy.recordsBefore}`, 'BYSCORE', 'LIMIT', offset, 500);
      if (ids.length === 0) break;
      let kept = 0;
      for (const id of ids) {
        const data = await this.redis.hget(this.k('d', id), 'data');
        if (!data) {
          await this.redis.zrem(all, id);
          continue;
        }
        const r = JSON.parse(data) as DeliveryRecord;
        if (r.status === 'queued' || r.status === 'sending') {
          kept++;
          continue;
        }
        const m = this.redis.multi().del(this.k('d', id), this.k('a', id));
        m.zrem(all, id)
          .zrem(this.k('i', 'org', r.organisation ?? ''), id)
          .zrem(this.k('i', 'st', r.status), id);
        m.zrem(this.k('i', 'unknown'), id);
        for (const a of r.recipients) m.zrem(this.k('i', 'rc', a.toLowerCase()), id);
        await m.exec();
        deleted++;
      }
      offset += kept;
      if (ids.length < 500) break;
    }
    // content past its time
    for (let offset = 0; ; offset += 500) {
      const ids = await this.redis.zrange(all, '-inf', `(${policy.contentBefore}`, 'BYSCORE', 'LIMIT', offset, 500);
      if (ids.length === 0) break;
      for (const id of ids) {
        const data = await this.redis.hget(this.k('d', id), 'data');
        if (!data) continue;
        const r = JSON.parse(data) as DeliveryRecord;
        if (r.content && r.updatedAt < policy.contentBefore) await this.update(id, { content: undefined });
      }
      if (ids.length < 500) break;
    }
    return deleted;
  }
}
