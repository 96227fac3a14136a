import { type EximCommandOptions, runExim } from './exim.js';

/** One message in the relay's queue, as `exim -bp` lists it. */
export interface QueuedMessage {
  queueId: string;
  /** Time in the queue as Exim shows it (`5m`, `2h`, `3d`). */
  age: string;
  /** Size as Exim shows it (`1.2K`). */
  size: string;
  /** The envelope sender (`<>` for a bounce). */
  sender: string;
  frozen: boolean;
  recipients: { address: string; delivered: boolean }[];
}

/** Parses the output of `exim -bp`. */
export function parseQueue(text: string): QueuedMessage[] {
  const out: QueuedMessage[] = [];
  let cur: QueuedMessage | undefined;
  for (const line of text.split('\n')) {
    const head = /^\s*(\d+[smhdw])\s+(\S+)\s+(\S+)\s+(<[^>]*>)(.*)$/.exec(line);
    if (head) {
      cur = {
        age: head[1]!,
        size: head[2]!,
        queueId: head[3]!,
        sender: head[4]!,
        frozen: /\*\*\* frozen \*\*\*/.test(head[5]!),
        recipients: [],
      };
      out.push(cur);
      continue;
    }
    const rcpt = /^\s+(D\s+)?(\S+)/.exec(line);
    if (rcpt && cur) cur.recipients.push({ address: rcpt[2]!, delivered: Boolean(rcpt[1]) });
  }
  return out;
}

/** Lists the relay's queue (`exim -bp`). Needs to run as root or an Exim admin user. */
export async function listQueue(options: EximCommandOptions = {}): Promise<QueuedMessage[]> {
  const r = await runExim(['-bp'], options);
  if (r.code !== 0) throw new Error(`exim -bp failed: ${(r.stderr || r.stdout).trim()}`);
  return parseQueue(r.stdout);
}
