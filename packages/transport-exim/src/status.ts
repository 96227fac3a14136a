import { type EximCommandOptions, eximOptions } from './exim.js';
import { type Diagnosis, diagnoseAttempt, type EximLogLine, mainLogPath, parseLogLine, readLogTail } from './logs.js';
import { listQueue } from './queue.js';

/** Options of {@link relayStatus}. */
export interface RelayStatusOptions extends EximCommandOptions {
  /** The message's RFC 5322 Message-ID (`<…@…>`, as in the receipt). */
  messageId?: string;
  /** Exim's id of the message (the receipt's `providerMessageId`): found from the Message-ID when absent. */
  queueId?: string;
  /** The relay's main log. @default from the configuration (`exim -bP log_file_path`) */
  logFile?: string;
  /** How much of the end of the log to read. @default 16 MiB */
  maxLogBytes?: number;
}

/** Where one recipient of a message stands in the relay. */
export interface RelayRecipientStatus {
  address: string;
  /** `pending`: in the queue, not tried yet (or no line about it yet). */
  state: 'delivered' | 'deferred' | 'failed' | 'pending';
  /** The upstream host that took it or refused it. */
  host?: string;
  /** The upstream's reply (`250 …` for a delivery, the error otherwise). */
  response?: string;
  /** What the failure or deferral means, when known. */
  diagnosis?: Diagnosis;
  /** Time of the last line about this recipient. */
  at?: string;
}

/** What the relay did with one message: the final outcome a relay receipt cannot tell. */
export interface RelayStatus {
  messageId?: string;
  queueId?: string;
  /**
   * `unknown`: the relay's log has no such message. `queued`: in the queue, no attempt yet.
   * `deferred`: a temporary failure; the relay retries it. `delivered`: every recipient went to
   * the upstream. `failed`: every recipient was refused for good. `partly-failed`: some delivered,
   * some refused.
   */
  state: 'unknown' | 'queued' | 'deferred' | 'delivered' | 'failed' | 'partly-failed';
  /** The relay user that sent it (from the arrival line's `A=authenticator:user`). */
  relayUser?: string;
  /** Still in the relay's queue. */
  inQueue: boolean;
  frozen: boolean;
  recipients: RelayRecipientStatus[];
  /** The relay's log lines about this message. */
  log: string[];
}

function field(text: string, name: string): string | undefined {
  const quoted = new RegExp(`(?:^| )${name}="((?:[^"\\\\]|\\\\.)*)"`).exec(text);
  if (quoted) return quoted[1];
  return new RegExp(`(?:^| )${name}=(\\S+)`).exec(text)?.[1];
}

/** Reads the relay's log for one message (pure; for tests and custom log sources). */
export function statusFromLog(
  lines: readonly string[],
  ref: { messageId?: string; queueId?: string },
): Omit<RelayStatus, 'inQueue' | 'frozen'> & { arrived: boolean } {
  const parsed = lines.map(parseLogLine);
  let queueId = ref.queueId;
  const bare = ref.messageId?.replace(/^<|>$/g, '');
  if (!queueId && bare) {
    queueId = parsed.find((l) => l.flag === '<=' && field(l.text, 'id') === bare)?.queueId;
  }
  const mine: EximLogLine[] = queueId ? parsed.filter((l) => l.queueId === queueId) : [];
  const arrival = mine.find((l) => l.flag === '<=');
  const recipients = new Map<string, RelayRecipientStatus>();
  const forList = arrival ? / for (.+)$/.exec(arrival.text)?.[1] : undefined;
  for (const a of forList?.split(' ') ?? []) recipients.set(a, { address: a, state: 'pending' });
  let attempt: string[] = [];
  for (const l of mine) {
    if (!l.flag) {
      attempt.push(l.text);
      continue;
    }
    if (!l.address || l.flag === '<=' || l.flag === 'Completed') continue;
    const address = l.address;
    const r: RelayRecipientStatus = recipients.get(address) ?? { address, state: 'pending' };
    if (l.time) r.at = l.time;
    const host = / H=(\S+)/.exec(l.text)?.[1];
    if (host) r.host = host;
    if (l.flag === '=>' || l.flag === '->' || l.flag === '*>') {
      r.state = 'delivered';
      const c = field(l.text, 'C');
      if (c) r.response = c;
      delete r.diagnosis;
    } else {
      r.state = l.flag === '**' ? 'failed' : 'deferred';
      const why = l.text.replace(/^\S+ \S+ /, '').replace(/^(<[^>]*> )?(R=\S+ )?(T=\S+ )?/, '');
      r.response = why;
      const d = diagnoseAttempt([why, ...attempt]);
      if (d) r.diagnosis = d;
    }
    recipients.set(address, r);
    attempt = [];
  }
  const list = [...recipients.values()];
  const states = new Set(list.map((r) => r.state));
  let state: RelayStatus['state'];
  if (!arrival && mine.length === 0) state = 'unknown';
  else if (states.has('deferred')) state = 'deferred';
  else if (list.length && list.every((r) => r.state === 'delivered')) state = 'delivered';
  else if (list.length && list.every((r) => r.state === 'failed')) state = 'failed';
  else if (states.has('failed') && !states.has('pending')) state = 'partly-failed';
  else state = 'queued';
  const auth = arrival ? / A=[^:\s]+:(\S+)/.exec(arrival.text)?.[1] : undefined;
  return {
    ...(ref.messageId ? { messageId: ref.messageId } : {}),
    ...(queueId ? { queueId } : {}),
    state,
    ...(auth ? { relayUser: auth } : {}),
    recipients: list,
    log: mine.map((l) => l.raw),
    arrived: Boolean(arrival),
  };
}

/**
 * What the relay did with a message it accepted: delivered to the upstream, deferred (and why),
 * failed (and why), or still queued. Reads the relay's main log and queue (`exim -bp`), so it
 * runs on the relay's machine as root or an Exim admin user.
 *
 * @example
 * ```ts
 * const receipt = await route.send(message); // acceptedBy: 'relay'
 * const status = await relayStatus({ config: '/etc/mailvia-exim/exim.conf', messageId: receipt.messageId, queueId: receipt.providerMessageId });
 * if (status.state === 'deferred') console.log(status.recipients[0]?.diagnosis?.title);
 * ```
 */
export async function relayStatus(options: RelayStatusOptions): Promise<RelayStatus> {
  if (!options.messageId && !options.queueId) throw new TypeError('relayStatus needs a messageId or a queueId');
  let logFile = options.logFile;
  if (!logFile) {
    const o = await eximOptions(['log_file_path', 'spool_directory'], options);
    logFile = mainLogPath(o.log_file_path, o.spool_directory);
    if (!logFile) throw new Error('the relay logs only to syslog: pass logFile');
  }
  const lines = await readLogTail(logFile, options.maxLogBytes ?? 16 * 1024 * 1024);
  const { arrived: _arrived, ...found } = statusFromLog(lines, options);
  const queue = await listQueue(options);
  const queued = found.queueId ? queue.find((q) => q.queueId === found.queueId) : undefined;
  const status: RelayStatus = { ...found, inQueue: Boolean(queued), frozen: queued?.frozen ?? false };
  if (queued) {
    for (const r of queued.recipients) {
      if (!status.recipients.some((x) => x.address === r.address)) {
        status.recipients.push({ address: r.address, state: r.delivered ? 'delivered' : 'pending' });
      }
    }
    if (status.state === 'unknown') status.state = 'queued';
  }
  return status;
}
