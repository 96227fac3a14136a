import { open, stat } from 'node:fs/promises';

/** One line of Exim's main log. */
export interface EximLogLine {
  /** `YYYY-MM-DD HH:MM:SS` as logged. */
  time?: string;
  /** Exim's id of the message the line is about. */
  queueId?: string;
  /**
   * `<=` arrival, `=>` delivery, `->` further address of a delivery, `*>` suppressed delivery,
   * `==` deferral, `**` failure, `Completed`.
   */
  flag?: '<=' | '=>' | '->' | '*>' | '==' | '**' | 'Completed';
  /** The address a delivery line is about (or the sender of an arrival). */
  address?: string;
  /** The line after the time (and the id). */
  text: string;
  raw: string;
}

const TIME = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.\d+)?(?: [+-]\d{4})?(?: \[\d+(?:\/\d+)?\])? (.*)$/;
/** Exim's message id: the short form (4.96: 1rABCd-000123-AB) and the long one (4.97+). */
export const QUEUE_ID = /\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}\b/;
const ID_AT_START = new RegExp(`^(${QUEUE_ID.source.replace(/\\b/g, '')}) (.*)$`);

/** Splits one main-log line into time, message id, flag and address. */
export function parseLogLine(raw: string): EximLogLine {
  const t = TIME.exec(raw);
  const rest = t ? t[2]! : raw;
  const out: EximLogLine = { text: rest, raw, ...(t ? { time: t[1]! } : {}) };
  const id = ID_AT_START.exec(rest);
  if (!id) return out;
  out.queueId = id[1]!;
  out.text = id[2]!;
  if (out.text === 'Completed' || out.text.startsWith('Completed ')) {
    out.flag = 'Completed';
    return out;
  }
  const f = /^(<=|=>|->|\*>|==|\*\*) (\S+)/.exec(out.text);
  if (f) {
    out.flag = f[1] as EximLogLine['flag'];
    out.address = f[2]!;
  }
  return out;
}

/** What a relay log line means, for people. */
export interface Diagnosis {
  /** A short stable id, e.g. `upstream-bad-credentials`. */
  id: string;
  severity: 'error' | 'warning' | 'info';
  /** What happened, in a few words. */
  title: string;
  /** What to do about it. */
  advice: string;
}

interface DiagnosisRule extends Diagnosis {
  match: RegExp;
}

/** The log texts the doctor and {@link relayStatus} recognise, most specific first. */
export const LOG_DIAGNOSES: readonly DiagnosisRule[] = [
  {
    id: 'upstream-bad-credentials',
    severity: 'error',
    match:
      /535[- ]5\.7\.8|Username and Password not accepted|BadCredentials|535[- ]Authentication (credentials invalid|failed)|535 Incorrect authentication/i,
    title: "the upstream refused the organisation's account (bad App Password?)",
    advice:
      'Check the upstream user and password in the organisations file. For Gmail, create a new App Password (Google Account » Security » App passwords; needs 2-Step Verification) and regenerate the relay.',
  },
  {
    id: 'upstream-app-password-required',
    severity: 'error',
    match: /534[- ]5\.7\.9|Application-specific password required/i,
    title: 'the upstream wants an App Password, not the account password',
    advice: 'Turn on 2-Step Verification for the account, create an App Password and put it in the organisations file.',
  },
  {
    id: 'upstream-web-login-required',
    severity: 'error',
    match: /534[- ]5\.7\.14|Please log in (via|with) your web browser/i,
    title: 'the upstream wants a sign-in in a web browser first',
    advice:
      'Sign in to the account in a browser (and confirm the activity Google flagged), then let the queue run again.',
  },
  {
    id: 'upstream-daily-limit',
    severity: 'warning',
    match: /5\.4\.5|Daily (user )?sending (limit|quota) exceeded|Daily SMTP relay limit/i,
    title: "the organisation's daily sending limit is reached",
    advice:
      "Gmail resets the limit over a rolling 24 hours. Mail already refused is failed in the relay; send it again later or through the organisation's next route.",
  },
  {
    id: 'upstream-ip-blocked',
    severity: 'error',
    match:
      /unusual rate of unsolicited mail|has been (temporarily )?(rate limited|blocked)|4\.7\.28|550[- ]5\.7\.1.*(unsolicited|blocked|IP)|421[- ]4\.7\.0.*(unsolicited|IP|Try again later)|ip address .*(blocked|blacklisted)/i,
    title: "the upstream is refusing or throttling this server's IP address",
    advice:
      "Google blocks an IP after too much mail or spam complaints: wait (often 24 h), check the server's IP reputation, and send through another route meanwhile.",
  },
  {
    id: 'upstream-auth-failed',
    severity: 'error',
    match: /authentication required but authentication attempt\(s\) failed|authenticator failed H=/i,
    title: "the relay could not log in to the upstream with the organisation's account",
    advice: 'See the upstream reply next to it; check the upstream user and password in the organisations file.',
  },
  {
    id: 'upstream-tls',
    severity: 'error',
    match:
      /TLS session|certificate (verification|verify) failed|a TLS session is required|TLS error on connection|TLS negotiation failed|not verified|hostname mismatch/i,
    title: 'TLS to the upstream failed (the relay never sends without it)',
    advice:
      "Check the upstream host and port (587 STARTTLS, 465 implicit TLS), the system's CA certificates, and that the name matches the certificate.",
  },
  {
    id: 'upstream-refused',
    severity: 'error',
    match: /Connection refused/i,
    title: 'the upstream refused the connection',
    advice: 'Check the upstream host and port; the upstream (or a firewall) is refusing connections.',
  },
  {
    id: 'upstream-unreachable',
    severity: 'error',
    match: /Connection timed out|Network is unreachable|No route to host|timed out|lost connection/i,
    title: 'the upstream could not be reached',
    advice:
      'Outbound SMTP ports may be blocked (hosting firewall, OVH, cPanel SMTP Restrictions allow only the MTA): check from this server as the Exim user.',
  },
  {
    id: 'upstream-dns',
    severity: 'error',
    match: /all host address lookups failed|host lookup did not complete|Unrouteable address/i,
    title: "the upstream's host name does not resolve",
    advice: 'Check the upstream host name and the DNS resolver of this server.',
  },
  {
    id: 'retry-wait',
    severity: 'info',
    match: /retry time not reached/i,
    title: 'waiting for the retry time after an earlier failure',
    advice: 'Exim tries again at the next queue run after the retry time; see the earlier failure for the cause.',
  },
  {
    id: 'relay-sender-refused',
    severity: 'warning',
    match:
      /mailvia: (sender .* refused|From: header refused)|is not an allowed sender of organisation|is not a sender of organisation/i,
    title: "an application tried to send as a sender that is not the organisation's",
    advice: "Send as one of the organisation's senders, or add the address to its senders and regenerate the relay.",
  },
  {
    id: 'relay-bad-password',
    severity: 'warning',
    match: /authenticator failed for .*535/i,
    title: 'an application used a wrong relay user or password',
    advice: "Check the route's relay user and password against the organisations file (the relay stores only a hash).",
  },
  {
    id: 'relay-unauthenticated',
    severity: 'warning',
    match: /relay not permitted/i,
    title: 'a client tried to relay without authenticating (refused)',
    advice: 'Every route to the relay must authenticate as an organisation (exim://user:pass@127.0.0.1:587).',
  },
];

/** What a log line (or an SMTP reply) means, when the table knows it. */
export function diagnose(text: string): Diagnosis | undefined {
  for (const r of LOG_DIAGNOSES) {
    if (r.match.test(text)) return { id: r.id, severity: r.severity, title: r.title, advice: r.advice };
  }
  return undefined;
}

/**
 * The most specific meaning among several lines of one delivery attempt (Exim logs the upstream's
 * reply on the authenticator's line and a generic "authentication … failed" on the deferral).
 */
export function diagnoseAttempt(texts: readonly string[]): Diagnosis | undefined {
  let best: number | undefined;
  for (const t of texts) {
    const i = LOG_DIAGNOSES.findIndex((r) => r.match.test(t));
    if (i >= 0 && (best === undefined || i < best)) best = i;
  }
  if (best === undefined) return undefined;
  const r = LOG_DIAGNOSES[best]!;
  return { id: r.id, severity: r.severity, title: r.title, advice: r.advice };
}

/** The last `maxBytes` of a log file, as lines (the first, partial line dropped). */
export async function readLogTail(file: string, maxBytes = 8 * 1024 * 1024): Promise<string[]> {
  const size = (await stat(file)).size;
  const start = Math.max(0, size - maxBytes);
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const lines = buf.toString('utf8').split('\n');
    if (start > 0) lines.shift();
    if (lines.at(-1) === '') lines.pop();
    return lines;
  } finally {
    await fh.close();
  }
}

/**
 * The main log's path from Exim's `log_file_path` and `spool_directory` (`%s` → `main`).
 * Undefined when Exim logs only to syslog.
 */
export function mainLogPath(logFilePath: string | undefined, spoolDirectory: string | undefined): string | undefined {
  const items = (logFilePath ?? '').split(':').map((s) => s.trim());
  const file = items.find((s) => s !== '' && s !== 'syslog');
  if (file) return file.replace('%s', 'main').replace(/%D|%M/g, '');
  if (items.some((s) => s === 'syslog') && !items.some((s) => s === '')) return undefined;
  return spoolDirectory ? `${spoolDirectory}/log/mainlog` : undefined;
}
