import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The shared provider contracts (../shared/contracts from the workspace). */
export const CONTRACTS = join(import.meta.dirname, '../../../../shared/contracts');

export function contract<T = any>(path: string): T {
  return JSON.parse(readFileSync(join(CONTRACTS, path), 'utf8')) as T;
}

/**
 * The sample events of Mailgun's own documentation (mailgun/api-events.rst), by their title
 * ("Delivered", "Failed (Temporary)", …). The doc's JavaScript blocks carry trailing and missing
 * commas; they are repaired here, not rewritten.
 */
export function mailgunDocEvent(title: string): Record<string, unknown> {
  const text = readFileSync(join(CONTRACTS, 'mailgun/api-events.rst'), 'utf8');
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === `**${title}:**` || l.trim() === `**${title}**`);
  if (start < 0) throw new Error(`no "${title}" sample in api-events.rst`);
  const block: string[] = [];
  let inCode = false;
  for (const line of lines.slice(start + 1)) {
    if (line.includes('.. code-block::')) {
      inCode = true;
      continue;
    }
    if (inCode && /^\*\*|^[A-Z][a-z]+\n?$|^-{3,}/.test(line)) break;
    if (inCode) block.push(line);
  }
  let js = block.join('\n').trim();
  js = js.replace(/,\s*$/, '');
  js = js.replace(/("|\d|true|false|\]|\})[ \t]*\n(\s*")/g, '$1,\n$2');
  js = js.replace(/,(\s*[}\]])/g, '$1');
  return JSON.parse(js) as Record<string, unknown>;
}
