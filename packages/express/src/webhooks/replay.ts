type MaybePromise<T> = T | Promise<T>;

/**
 * Remembers the webhook requests already accepted, to refuse a replay. In memory by default; with
 * several app instances, give one shared store (e.g. Redis `SET key 1 NX PX ttl`).
 */
export interface ReplayStore {
  /** Records `key` for `ttlMs`; resolves false when it is already recorded (a replay). */
  claim(key: string, ttlMs: number): MaybePromise<boolean>;
  /** Forgets `key` (processing failed: the provider's retry must be accepted). */
  release(key: string): MaybePromise<void>;
}

/** The in-process {@link ReplayStore}: a map with expiry, bounded in size. */
export class MemoryReplayStore implements ReplayStore {
  private readonly seen = new Map<string, number>();
  private readonly max: number;
  private readonly now: () => number;

  /** @param options.max keys kept at most (the oldest go first). @default 100_000 */
  constructor(options: { max?: number; now?: () => number } = {}) {
    this.max = options.max ?? 100_000;
    this.now = options.now ?? Date.now;
  }

  claim(key: string, ttlMs: number): boolean {
    const now = this.now();
    const until = this.seen.get(key);
    if (until !== undefined && until > now) return false;
    this.seen.delete(key);
    this.seen.set(key, now + ttlMs);
    this.sweep(now);
    return true;
  }

  release(key: string): void {
    this.seen.delete(key);
  }

  /** How many keys are remembered now. */
  get size(): number {
    return this.seen.size;
  }

  private sweep(now: number): void {
    for (const [k, until] of this.seen) {
      if (this.seen.size <= this.max && until > now) break;
      this.seen.delete(k);
    }
  }
}
