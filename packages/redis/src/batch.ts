/** An ioredis MULTI or pipeline, as far as a batch uses it. */
interface Multi {
  exec(): Promise<[Error | null, unknown][] | null>;
  /** How many commands are queued. */
  readonly length: number;
}

/**
 * A client a batch opens its transactions on: an ioredis client, or BullMQ's wrapper of one (where
 * jobs are written, since BullMQ's scripts are defined there).
 */
export interface TransactionClient {
  multi(): Multi;
  pipeline(): Multi;
  defineCommand(name: string, definition: { lua: string; numberOfKeys?: number }): void;
}

/** What a batch item writes to. */
export interface Transaction {
  /** Queues a script defined with {@link WriteBatch.define}: key count, keys, then arguments. */
  run(command: string, keys: number, ...args: (string | number)[]): void;
  /** The MULTI (or pipeline) itself, for writers that queue their own commands (BullMQ's `Job.addJob`). */
  readonly multi: Multi;
}

/** One writer's share of a transaction. */
export interface BatchItem {
  /** Queues its commands, synchronously. */
  write(tx: Transaction): void;
  /** Its commands' replies, in order (error or value each). */
  settle(replies: [Error | null, unknown][]): void;
  /** The transaction did not run. */
  fail(error: unknown): void;
}

/**
 * The writes of one tick, in one round trip: a MULTI when it holds an item that follows another
 * (a delivery record written with its enqueue's BullMQ job, so neither is ever stored without the
 * other), else a pipeline (jobs alone, each atomic by itself). A full batch goes at once (Redis
 * works on it while this process prepares the next); the rest at the end of the tick. Scripts run
 * with EVALSHA (ioredis sends the script itself once per connection).
 */
export class WriteBatch {
  private items: BatchItem[] = [];
  /** Leading items in {@link items}: a batch holds up to `limit` of them. */
  private leading = 0;
  /** Following items in {@link items}: with none, the batch needs no transaction. */
  private following = 0;
  private client: TransactionClient | undefined;
  private readonly scripts = new Map<string, string>();

  constructor(
    private readonly connect: () => Promise<TransactionClient>,
    private readonly limit = 50,
  ) {}

  /** Defines a script that items can {@link Transaction.run} (before or after the first write). */
  define(command: string, lua: string): void {
    this.scripts.set(command, lua);
    this.client?.defineCommand(command, { lua });
  }

  /**
   * Adds an item. A leading one (a job) first sends a batch that holds `limit` leading items; a
   * following one (its record) always joins the batch of the job before it.
   */
  push(item: BatchItem, leads: boolean): void {
    if (leads && this.leading >= this.limit) this.flush();
    if (leads) this.leading++;
    else this.following++;
    if (this.items.push(item) === 1) process.nextTick(() => this.flush());
  }

  private flush(): void {
    if (this.items.length === 0) return;
    const items = this.items;
    // a job alone is atomic by itself: a batch of jobs only is a pipeline, cheaper than a MULTI
    const atomic = this.following > 0;
    this.items = [];
    this.leading = 0;
    this.following = 0;
    if (this.client) {
      this.run(this.client, items, atomic);
      return;
    }
    this.connect().then(
      (client) => {
        if (!this.client) {
          for (const [command, lua] of this.scripts) client.defineCommand(command, { lua });
          this.client = client;
        }
        this.run(client, items, atomic);
      },
      (e: unknown) => {
        for (const item of items) item.fail(e);
      },
    );
  }

  private run(client: TransactionClient, items: BatchItem[], atomic: boolean): void {
    const ends: number[] = [];
    let multi: Multi;
    try {
      multi = atomic ? client.multi() : client.pipeline();
      const tx: Transaction = {
        multi,
        run(command, keys, ...args) {
          const queue = (multi as unknown as Record<string, (...a: (string | number)[]) => unknown>)[command];
          if (typeof queue !== 'function') throw new Error(`the script ${command} is not defined`);
          queue.call(multi, keys, ...args);
        },
      };
      const start = multi.length;
      for (const item of items) {
        item.write(tx);
        ends.push(multi.length - start);
      }
    } catch (e) {
      for (const item of items) item.fail(e);
      return;
    }
    multi.exec().then(
      (replies) => {
        if (!replies) {
          const e = new Error('Redis discarded the transaction');
          for (const item of items) item.fail(e);
          return;
        }
        let at = 0;
        items.forEach((item, i) => {
          item.settle(replies.slice(at, ends[i]));
          at = ends[i]!;
        });
      },
      (e: unknown) => {
        for (const item of items) item.fail(e);
      },
    );
  }
}

/**
 * Items gathered for a moment and written together: the write runs `delay` ms after the first
 * item (at once when `limit` are held). Items the write hands back wait for the next write,
 * `delay` later; when a write fails, all of its items wait for the next one, a second later.
 */
export class Gathered<T> {
  private items: T[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  /** The writes under way. */
  private writes: Promise<void> = Promise.resolve();

  constructor(
    private readonly write: (items: T[]) => Promise<T[] | undefined>,
    private readonly delay: number,
    private readonly limit = Number.POSITIVE_INFINITY,
  ) {}

  add(item: T): void {
    this.items.push(item);
    if (this.items.length >= this.limit) this.flush().catch(() => {});
    else this.schedule(this.delay);
  }

  private schedule(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => void this.flush().catch(() => {}), ms);
    this.timer.unref?.();
  }

  /**
   * Writes the items held now; resolves once they (and any write under way) are written,
   * rejects when the write failed (they are tried again a second later).
   */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const items = this.items.splice(0);
    const before = this.writes;
    if (items.length === 0) return before;
    const write = this.write(items).then(
      (again) => {
        if (!again?.length) return;
        this.items.push(...again);
        this.schedule(this.delay);
      },
      (e: unknown) => {
        this.items.unshift(...items);
        this.schedule(1_000);
        throw e;
      },
    );
    this.writes = Promise.all([before, write.catch(() => {})]).then(() => {});
    await write;
  }
}
