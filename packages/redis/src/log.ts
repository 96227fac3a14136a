import {
  type AttemptRecord,
  type DeliveryDetails,
  type DeliveryEvent,
  type DeliveryLog,
  type DeliveryQuery,
  type DeliveryRecord,
  MAX_DELIVERY_EVENTS,
  matchesQuery,
  type RetentionPolicy,
  type SentOutcome,
} from '@mailvia/core';
import type { Redis } from 'ioredis';
import { type BatchItem, Gathered, type TransactionClient, WriteBatch } from './batch.js';
import { script } from './scripts.js';

// A record is a hash: `_status`, `_score` (creation time), `_u` (unknown outcome, 1/0), `_r` (the
// record as written, JSON) and, over it, one field per property changed since (its JSON; '' for a
// removed one), `content` (kept apart so that dropping it deletes it) and `_a:<attempt id>` per
// attempt (its JSON), so that an attempt and its record are written and read by one command.
// Attempts written before their record make a hash without `_status`: not a record yet.

// Writes a batch of records (the puts of one tick), each as a whole: a record already there is
// replaced (its attempts kept), and moved out of the status and unknown indexes it no longer belongs to.
// KEYS: all, unknown, then per record: the record, its org, recipient, Message-ID[, provider id] indexes
// ARGV: status index prefix, then per record: id, score, status, unknown (1/0), its key count,
// record JSON, content JSON or ''
const PUT_MANY = `
local st = ARGV[1]
local k = 3
-- index entries are added per index, once for the batch (before a record replaced in it is moved)
local byKey, order = {}, {}
local function add(key, score, id)
  local e = byKey[key]
  if not e then e = {}; byKey[key] = e; order[#order + 1] = key end
  e[#e + 1] = score
  e[#e + 1] = id
end
local function flush()
  for _, key in ipairs(order) do redis.call('ZADD', key, unpack(byKey[key])) end
  byKey, order = {}, {}
end
for a = 2, #ARGV, 7 do
  local id, score, status, unk, nk = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  local rec = KEYS[k]
  local old = redis.call('HGET', rec, '_status')
  if old then
    flush()
    if old ~= status then redis.call('ZREM', st .. old, id) end
    if unk ~= '1' then redis.call('ZREM', KEYS[2], id) end
    local drop = {}
    for _, f in ipairs(redis.call('HKEYS', rec)) do
      if string.sub(f, 1, 3) ~= '_a:' then drop[#drop + 1] = f end
    end
    redis.call('HDEL', rec, unpack(drop))
  end
  redis.call('HSET', rec, '_status', status, '_score', score, '_u', unk, '_r', ARGV[a + 5])
  if ARGV[a + 6] ~= '' then redis.call('HSET', rec, 'content', ARGV[a + 6]) end
  add(KEYS[1], score, id)
  add(st .. status, score, id)
  if unk == '1' then add(KEYS[2], score, id) end
  for i = k + 1, k + nk - 1 do add(KEYS[i], score, id) end
  k = k + nk
end
flush()
return k`;

// KEYS: PUT_MANY's (with one record), then the send key, then the record key prefix; ARGV: PUT_MANY's
// (answers the id holding the key, or writes the record as PUT_MANY does)
const CLAIM = `
local records = table.remove(KEYS)
local claim = table.remove(KEYS)
local held = redis.call('GET', claim)
if held and held ~= ARGV[2] then
  local h = redis.call('HMGET', records .. held, '_status', '_u')
  if h[1] and (h[1] ~= 'failed' or h[2] == '1') then return held end
end
redis.call('SET', claim, ARGV[2])
${PUT_MANY}`;

/** An outcome waiting for its write: its keys and arguments in UPDATE_MANY, and the record to write without one. */
interface PendingOutcome {
  keys: string[];
  args: string[];
  whole?: () => DeliveryRecord;
}

/** At most this many outcomes wait for one write. */
const OUTCOME_BATCH = 200;

/** The name the batched put is defined under on the batch's client. */
const PUTS_COMMAND = 'mailviaLogPuts';

/** At most this many records go in one write. */
const PUT_BATCH = 200;

interface PendingPut {
  keys: string[];
  /** id, score, status, unknown, key count, record JSON, content JSON or '' */
  args: string[];
  resolve: () => void;
  reject: (e: unknown) => void;
}

// Changes records; with a send's outcome, writes its ending attempts first (even without a record).
// An outcome whose attempt is no longer in flight (a worker that took the job again concluded it,
// while this outcome waited for Redis) writes its attempts only: the record is that worker's.
// Answers the ids that have no record. One read and one write of the record's hash per change.
// KEYS: unknown index, then per change: record[, provider id index to add the delivery to].
// ARGV: status index prefix, then per change: id, its key count (1 or 2), new status or '', unknown
// '1'/'0'/'', n, m, n field/value pairs, m fields removed, k, k attempt id/JSON pairs. A removed
// field is deleted from the changes; one the record as written holds is masked ('').
const UPDATE_MANY = `
local st = ARGV[1]
local missing = {}
local a, k = 2, 2
while a <= #ARGV do
  local id, nk, status, unk = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  local n, m = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local rec = KEYS[k]
  local fields, removed = a + 6, a + 6 + 2 * n
  local c = removed + m
  local na = tonumber(ARGV[c])
  local want = {'_score', '_status', '_u', '_r'}
  local set = {}
  for i = c + 1, c + 2 * na, 2 do
    want[#want + 1] = '_a:' .. ARGV[i]
    set[#set + 1] = '_a:' .. ARGV[i]
    set[#set + 1] = ARGV[i + 1]
  end
  for i = removed, c - 1 do want[#want + 1] = ARGV[i] end
  local h = redis.call('HMGET', rec, unpack(want))
  local score, old, u, base = h[1], h[2], h[3], h[4]
  local concluded = false
  for j = 5, 4 + na do
    if h[j] and not string.find(h[j], '"status":"in-flight"', 1, true) then concluded = true end
  end
  if not score then
    missing[#missing + 1] = id
  elseif not concluded then
    if status ~= '' and old ~= status then
      if old then redis.call('ZREM', st .. old, id) end
      redis.call('ZADD', st .. status, score, id)
      set[#set + 1] = '_status'
      set[#set + 1] = status
    end
    if unk ~= '' and unk ~= u then
      if unk == '1' then redis.call('ZADD', KEYS[1], score, id) else redis.call('ZREM', KEYS[1], id) end
      set[#set + 1] = '_u'
      set[#set + 1] = unk
    end
    if nk == 2 then redis.call('ZADD', KEYS[k + 1], score, id) end
    for i = fields, removed - 1 do set[#set + 1] = ARGV[i] end
    local del = {}
    for i = removed, c - 1 do
      if base and string.find(base, '"' .. ARGV[i] .. '":', 1, true) then
        set[#set + 1] = ARGV[i]
        set[#set + 1] = ''
      elseif h[4 + na + i - removed + 1] then
        del[#del + 1] = ARGV[i]
      end
    end
    if #del > 0 then redis.call('HDEL', rec, unpack(del)) end
  end
  if #set > 0 then redis.call('HSET', rec, unpack(set)) end
  a = c + 1 + 2 * na
  k = k + nk
end
return missing`;

// Writes an attempt; with a record (one a queued job carried), writes that first when there is
// none, in the same command as the attempt (a record written with its attempt in flight says sending).
// KEYS: record[, then the record's org, recipient, Message-ID[, provider id] indexes, all, unknown]
// ARGV: attempt id, attempt JSON, in flight (1/0), status index prefix, delivery id[, then the
// record's score, status, unknown (1/0), JSON, content JSON or '']
const ATTEMPT = `
local field = '_a:' .. ARGV[1]
if #ARGV > 5 and redis.call('HEXISTS', KEYS[1], '_status') == 0 then
  local id, score, status, unk = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
  local set = {'_status', status, '_score', score, '_u', unk, '_r', ARGV[9], field, ARGV[2]}
  if ARGV[10] ~= '' then
    set[#set + 1] = 'content'
    set[#set + 1] = ARGV[10]
  end
  redis.call('HSET', KEYS[1], unpack(set))
  redis.call('ZADD', ARGV[4] .. status, score, id)
  redis.call('ZADD', KEYS[#KEYS - 1], score, id)
  if unk == '1' then redis.call('ZADD', KEYS[#KEYS], score, id) end
  for i = 2, #KEYS - 2 do redis.call('ZADD', KEYS[i], score, id) end
  return 1
end
redis.call('HSET', KEYS[1], field, ARGV[2])
if ARGV[3] == '1' then
  local h = redis.call('HMGET', KEYS[1], '_status', '_score')
  if h[1] and h[1] ~= 'sending' then
    redis.call('ZREM', ARGV[4] .. h[1], ARGV[5])
    redis.call('ZADD', ARGV[4] .. 'sending', h[2], ARGV[5])
    redis.call('HSET', KEYS[1], '_status', 'sending', 'status', '"sending"')
  end
end
return 1`;

// KEYS: record, events list; ARGV: event JSON, how many to keep
const EVENT = `
if redis.call('HEXISTS', KEYS[1], '_status') == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
return 1`;

/** Changed properties as hash fields: each JSON-encoded in its own field. */
function fields(record: Partial<DeliveryRecord>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(record)) if (v !== undefined) out.push(k, JSON.stringify(v));
  return out;
}

/** The record as written (its content apart) and the content's JSON, or ''. */
function encodeRecord(record: DeliveryRecord): [string, string] {
  if (record.content === undefined) return [JSON.stringify(record), ''];
  const { content, ...rest } = record;
  return [JSON.stringify(rest), JSON.stringify(content)];
}

function fromHash(hash: Record<string, string>): DeliveryRecord | undefined {
  if (!hash._status) return undefined;
  const out: Record<string, unknown> = hash._r ? (JSON.parse(hash._r) as Record<string, unknown>) : {};
  for (const [k, v] of Object.entries(hash)) {
    if (k.startsWith('_')) continue;
    if (v === '') delete out[k];
    else out[k] = JSON.parse(v);
  }
  return out as unknown as DeliveryRecord;
}

/** Where the log finds records that queued jobs carry (the {@link RedisQueue} it was made with). */
export interface CarriedRecords {
  /** The record a job carries, if any. */
  carried(id: string): Promise<DeliveryRecord | undefined>;
  /** The records of jobs not yet done with. */
  untaken(): Promise<DeliveryRecord[]>;
}

/**
 * The delivery log in Redis: a hash per delivery (the record as written, each later change in a
 * field of its own, and its attempts, so an update is one atomic script that reads and writes
 * the hash once), a list of its provider events, and sorted sets by
 * creation time per organisation, status, recipient, Message-ID, provider id and unknown outcome
 * for queries (a webhook finds its delivery by one lookup). Made with the queue (as `redisStores`
 * makes it), it also answers for mail whose record still rides in its queued job: `get` reads the
 * job, and a query that can match queued mail (by organisation, status, recipient or time) reads
 * the jobs not yet taken; lookups by Message-ID or provider id find it once a worker took it.
 */
export class RedisDeliveryLog implements DeliveryLog {
  /** Puts waiting for their batch to be written. */
  private pending: PendingPut[] | undefined;
  private readonly batch: WriteBatch;
  private readonly head: string;
  private readonly claimScript = script(CLAIM, 6);
  private readonly releaseScript = script(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    1,
  );
  private readonly updateScript = script(UPDATE_MANY, 1);
  /** Outcomes {@link finishLater} holds for the next write. */
  private readonly outcomes: Gathered<PendingOutcome>;
  private readonly attemptScript = script(ATTEMPT, 1);
  private readonly eventScript = script(EVENT, 2);

  /**
   * @param batch where whole records are written: `redisStores` shares one with the queue, so a
   * job and a record written with it go in one transaction; by default, transactions on `redis`.
   * @param queue the queue whose jobs carry records (set its `recordLog` to this log).
   * @param outcomeDelay how long {@link finishLater} gathers outcomes before writing them (ms).
   */
  constructor(
    private readonly redis: Redis,
    prefix: string,
    batch?: WriteBatch,
    private readonly queue?: CarriedRecords,
    outcomeDelay = 20,
  ) {
    this.outcomes = new Gathered((items) => this.writeOutcomes(items), outcomeDelay, OUTCOME_BATCH);
    this.head = `${prefix}:log:`;
    this.batch = batch ?? new WriteBatch(async () => redis as unknown as TransactionClient);
    this.batch.define(PUTS_COMMAND, PUT_MANY);
  }

  private k(kind: string, a: string, b?: string): string {
    return b === undefined ? `${this.head}${kind}:${a}` : `${this.head}${kind}:${a}:${b}`;
  }

  /**
   * Writes a record whole. The puts of one tick (e.g. many enqueues at once) go to Redis in one
   * script call, in the transaction of their jobs; every put resolves once Redis has run it.
   */
  put(record: DeliveryRecord): Promise<void> {
    const { keys, args } = this.entry(record);
    return new Promise<void>((resolve, reject) => {
      let group = this.pending;
      if (!group) {
        group = [];
        this.pending = group;
        this.batch.push(this.putItem(group), false);
      }
      group.push({ keys, args, resolve, reject });
    });
  }

  /** A record's keys and arguments in PUT_MANY (after the batch's own). */
  private entry(record: DeliveryRecord): { keys: string[]; args: string[] } {
    const keys = [
      this.k('d', record.id),
      this.k('i', 'org', record.organisation ?? ''),
      ...[...new Set(record.recipients.map((a) => a.toLowerCase()))].map((a) => this.k('i', 'rc', a)),
      this.k('i', 'mid', record.messageId),
      ...(record.providerMessageId !== undefined ? [this.k('i', 'pid', record.providerMessageId)] : []),
    ];
    const [json, content] = encodeRecord(record);
    return {
      keys,
      args: [
        record.id,
        String(record.createdAt),
        record.status,
        record.unknown ? '1' : '0',
        String(keys.length),
        json,
        content,
      ],
    };
  }

  private sendKey(record: DeliveryRecord): string {
    return this.k('sk', JSON.stringify([record.organisation ?? '', record.idempotencyKey]));
  }

  async claim(record: DeliveryRecord): Promise<{ id: string; created: boolean }> {
    if (record.idempotencyKey === undefined) {
      await this.put(record);
      return { id: record.id, created: true };
    }
    const { keys, args } = this.entry(record);
    const r = await this.claimScript(
      this.redis,
      [this.k('i', 'all'), this.k('i', 'unknown'), ...keys, this.sendKey(record), this.k('d', '')],
      [this.k('i', 'st', ''), ...args],
    );
    return typeof r === 'string' ? { id: r, created: false } : { id: record.id, created: true };
  }

  /** A group of puts' share of a batch: one script call per PUT_BATCH records. */
  private putItem(group: PendingPut[]): BatchItem {
    return {
      write: (tx) => {
        if (this.pending === group) this.pending = undefined;
        for (let i = 0; i < group.length; i += PUT_BATCH) {
          const part = group.slice(i, i + PUT_BATCH);
          const keys = [this.k('i', 'all'), this.k('i', 'unknown')];
          for (const p of part) for (const key of p.keys) keys.push(key);
          const args = [this.k('i', 'st', '')];
          for (const p of part) for (const a of p.args) args.push(a);
          tx.run(PUTS_COMMAND, keys.length, ...keys, ...args);
        }
      },
      settle: (replies) => {
        replies.forEach(([error], i) => {
          for (const p of group.slice(i * PUT_BATCH, (i + 1) * PUT_BATCH)) {
            if (error) p.reject(error);
            else p.resolve();
          }
        });
      },
      fail: (error) => {
        if (this.pending === group) this.pending = undefined;
        for (const p of group) p.reject(error);
      },
    };
  }

  /**
   * Changes fields in one atomic step (a new provider id is indexed; organisation, recipients,
   * Message-ID and createdAt are not re-indexed).
   */
  async update(id: string, patch: Partial<Omit<DeliveryRecord, 'id'>>): Promise<boolean> {
    return this.finish(id, [], patch);
  }

  /** A send's outcome in one script call: its ending attempts, then the record's changes. */
  async finish(
    id: string,
    attempts: readonly AttemptRecord[],
    patch: Partial<Omit<DeliveryRecord, 'id'>>,
  ): Promise<boolean> {
    return (await this.applyChanges([this.change(id, attempts, patch)])).size === 0;
  }

  /** Changes in one UPDATE_MANY call; resolves with the ids that have no record. */
  private async applyChanges(changes: readonly { keys: string[]; args: string[] }[]): Promise<Set<string>> {
    const keys = [this.k('i', 'unknown')];
    const args = [this.k('i', 'st', '')];
    for (const c of changes) {
      keys.push(...c.keys);
      args.push(...c.args);
    }
    return new Set((await this.updateScript(this.redis, keys, args)) as string[]);
  }

  /** A change's keys and arguments in UPDATE_MANY (after the shared ones). */
  private change(
    id: string,
    attempts: readonly AttemptRecord[],
    patch: Partial<Omit<DeliveryRecord, 'id'>>,
  ): { keys: string[]; args: string[] } {
    const set = fields(patch);
    const removed: string[] = [];
    for (const [k, v] of Object.entries(patch)) if (v === undefined) removed.push(k);
    const keys = [this.k('d', id)];
    if (patch.providerMessageId !== undefined) keys.push(this.k('i', 'pid', patch.providerMessageId));
    const args = [
      id,
      String(keys.length),
      patch.status ?? '',
      patch.unknown === undefined ? '' : patch.unknown ? '1' : '0',
      String(set.length / 2),
      String(removed.length),
      ...set,
      ...removed,
      String(attempts.length),
    ];
    for (const a of attempts) {
      if (a.deliveryId !== id) throw new Error(`attempt ${a.id} is of delivery ${a.deliveryId}, not ${id}`);
      args.push(a.id, JSON.stringify(a));
    }
    return { keys, args };
  }

  /**
   * Writes a sent job's outcome as {@link finish} does, within `outcomeDelay` ms, in one script
   * call with the other outcomes of that time (for a queue that keeps the outcome with the job's
   * completion meanwhile). A delivery without a record gets the record `whole` gives (when
   * given). A write that fails is tried again a second later.
   */
  finishLater(id: string, outcome: SentOutcome, whole?: () => DeliveryRecord): void {
    this.outcomes.add({ ...this.change(id, outcome.attempts, outcome.patch), ...(whole ? { whole } : {}) });
  }

  /**
   * Writes the outcomes {@link finishLater} holds now; resolves once they (and any being written)
   * are in Redis, rejects when Redis refused them (they are tried again a second later).
   */
  flushOutcomes(): Promise<void> {
    // when Redis is away, they wait for the next try (the queue keeps them with the jobs meanwhile)
    return this.outcomes.flush();
  }

  private async writeOutcomes(items: PendingOutcome[]): Promise<undefined> {
    const missing = await this.applyChanges(items);
    if (missing.size === 0) return;
    await Promise.all(items.filter((o) => o.whole && missing.has(o.args[0]!)).map((o) => this.put(o.whole!())));
  }

  /** The deliveries the log says are being sent (an attempt in flight, or an outcome not yet written). */
  async sending(): Promise<string[]> {
    return this.redis.zrange(this.k('i', 'st', 'sending'), '0', '-1');
  }

  async putAttempt(attempt: AttemptRecord, record?: DeliveryRecord): Promise<void> {
    const inFlight = attempt.status === 'in-flight';
    const args = [attempt.id, JSON.stringify(attempt), inFlight ? '1' : '0', this.k('i', 'st', ''), attempt.deliveryId];
    if (!record) {
      await this.attemptScript(this.redis, [this.k('d', attempt.deliveryId)], args);
      return;
    }
    // written as sending when the attempt is in flight, so the record's own step is its only one
    const e = this.entry(inFlight ? { ...record, id: attempt.deliveryId, status: 'sending' } : record);
    args.push(e.args[1]!, e.args[2]!, e.args[3]!, e.args[5]!, e.args[6]!);
    await this.attemptScript(this.redis, [...e.keys, this.k('i', 'all'), this.k('i', 'unknown')], args);
  }

  async addEvent(id: string, event: DeliveryEvent): Promise<boolean> {
    const r = await this.eventScript(
      this.redis,
      [this.k('d', id), this.k('e', id)],
      [JSON.stringify(event), MAX_DELIVERY_EVENTS],
    );
    return Number(r) === 1;
  }

  async get(id: string): Promise<DeliveryDetails | undefined> {
    const [[, hash], [, events]] = (await this.redis
      .multi()
      .hgetall(this.k('d', id))
      .lrange(this.k('e', id), 0, -1)
      .exec()) as [[unknown, Record<string, string>], [unknown, string[]]];
    const record = fromHash(hash) ?? (await this.queue?.carried(id));
    if (!record) return undefined;
    const history: AttemptRecord[] = [];
    for (const [k, v] of Object.entries(hash)) if (k.startsWith('_a:')) history.push(JSON.parse(v) as AttemptRecord);
    history.sort((a, b) => a.startedAt - b.startedAt);
    return { ...record, history, events: events.map((e) => JSON.parse(e) as DeliveryEvent) };
  }

  private indexFor(q: DeliveryQuery): string {
    if (q.messageId !== undefined) return this.k('i', 'mid', q.messageId);
    if (q.providerMessageId !== undefined) return this.k('i', 'pid', q.providerMessageId);
    if (q.recipient !== undefined) return this.k('i', 'rc', q.recipient.toLowerCase());
    if (q.organisation !== undefined) return this.k('i', 'org', q.organisation);
    if (typeof q.status === 'string') return this.k('i', 'st', q.status);
    if (q.unknown === true) return this.k('i', 'unknown');
    return this.k('i', 'all');
  }

  async query(q: DeliveryQuery = {}): Promise<DeliveryRecord[]> {
    const want = (q.offset ?? 0) + (q.limit ?? 100);
    const [logged, carried] = await Promise.all([this.logged(q, want), this.untaken(q)]);
    if (carried.length === 0) return logged.slice(q.offset ?? 0, want);
    const seen = new Set(logged.map((r) => r.id));
    return [...logged, ...carried.filter((r) => !seen.has(r.id))]
      .sort((a, b) => b.createdAt - a.createdAt)
      .slice(q.offset ?? 0, want);
  }

  /**
   * Queued mail matching the query whose record still rides in its job: reads every job not yet
   * taken, unless the query cannot match such a record. Lookups by Message-ID or provider id (a
   * webhook's) never read the queue: a provider reports only on mail a worker took and logged.
   */
  private async untaken(q: DeliveryQuery): Promise<DeliveryRecord[]> {
    if (!this.queue || q.messageId !== undefined || q.providerMessageId !== undefined || q.unknown === true) return [];
    if (q.status !== undefined && !(Array.isArray(q.status) ? q.status : [q.status]).includes('queued')) return [];
    const candidates = (await this.queue.untaken()).filter((r) => matchesQuery(r, q));
    if (candidates.length === 0) return [];
    // a record the log has (the job was taken, or retried) is the log's to answer
    const pipe = this.redis.pipeline();
    for (const r of candidates) pipe.exists(this.k('d', r.id));
    const there = (await pipe.exec()) ?? [];
    return candidates.filter((_r, i) => Number(there[i]?.[1]) === 0);
  }

  /** The first `want` records of the log itself matching the query, newest first. */
  private async logged(q: DeliveryQuery, want: number): Promise<DeliveryRecord[]> {
    const max = q.until !== undefined ? `(${q.until}` : '+inf';
    const min = q.since !== undefined ? String(q.since) : '-inf';
    const index = this.indexFor(q);
    const out: DeliveryRecord[] = [];
    const page = 200;
    for (let offset = 0; out.length < want; offset += page) {
      const ids = await this.redis.zrange(index, max, min, 'BYSCORE', 'REV', 'LIMIT', offset, page);
      if (ids.length === 0) break;
      const pipe = this.redis.pipeline();
      for (const id of ids) pipe.hgetall(this.k('d', id));
      const rows = (await pipe.exec()) ?? [];
      for (const [, hash] of rows) {
        const r = fromHash((hash ?? {}) as Record<string, string>);
        if (!r) continue;
        if (matchesQuery(r, q)) out.push(r);
        if (out.length >= want) break;
      }
      if (ids.length < page) break;
    }
    return out;
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
        const r = fromHash(await this.redis.hgetall(this.k('d', id)));
        if (!r) {
          await this.redis.zrem(all, id);
          continue;
        }
        if (r.status === 'queued' || r.status === 'sending') {
          kept++;
          continue;
        }
        const m = this.redis.multi().del(this.k('d', id), this.k('e', id));
        m.zrem(all, id)
          .zrem(this.k('i', 'org', r.organisation ?? ''), id)
          .zrem(this.k('i', 'st', r.status), id);
        m.zrem(this.k('i', 'unknown'), id).zrem(this.k('i', 'mid', r.messageId), id);
        if (r.providerMessageId !== undefined) m.zrem(this.k('i', 'pid', r.providerMessageId), id);
        for (const a of r.recipients) m.zrem(this.k('i', 'rc', a.toLowerCase()), id);
        await m.exec();
        if (r.idempotencyKey !== undefined && r.via === 'send')
          await this.releaseScript(this.redis, [this.sendKey(r)], [id]);
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
        const r = fromHash(await this.redis.hgetall(this.k('d', id)));
        if (r?.content && r.updatedAt < policy.contentBefore) await this.update(id, { content: undefined });
      }
      if (ids.length < 500) break;
    }
    return deleted;
  }
}
