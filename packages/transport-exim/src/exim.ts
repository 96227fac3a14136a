import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { gunzipSync } from 'node:zlib';

/** How to run the relay's Exim: which binary, which configuration. */
export interface EximCommandOptions {
  /** The Exim binary. @default the first of `exim4`, `exim` on PATH, /usr/sbin, /usr/exim/bin */
  eximBin?: string;
  /** The configuration file (`-C`). @default Exim's own default configuration */
  config?: string;
  /** Timeout of each Exim command, ms. @default 15000 */
  timeout?: number;
}

/** The output of one Exim command. */
export interface EximResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Finds the Exim binary: `exim4` (Debian) or `exim` (cPanel, others). Undefined when there is none. */
export function findExim(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/exim/bin', '/usr/local/sbin'];
  for (const name of ['exim4', 'exim']) {
    for (const d of dirs) {
      if (!d) continue;
      const p = join(d, name);
      if (existsSync(p)) return p;
    }
  }
  return undefined;
}

/** The Exim binary to use, or an error that says how to get one. */
export function eximBinary(options: EximCommandOptions = {}): string {
  const bin = options.eximBin ?? findExim();
  if (!bin) {
    throw new Error(
      'Exim was not found (looked for exim4 and exim on PATH and in /usr/sbin): install it (Debian: apt-get install exim4-daemon-light) or pass --exim',
    );
  }
  return bin;
}

/** Runs Exim with the configured `-C` and the given arguments. Never throws for a non-zero exit. */
export function runExim(args: string[], options: EximCommandOptions = {}, input?: string): Promise<EximResult> {
  const bin = eximBinary(options);
  const full = options.config ? ['-C', options.config, ...args] : args;
  return new Promise((resolve, reject) => {
    const child = execFile(
      bin,
      full,
      { timeout: options.timeout ?? 15_000, maxBuffer: 32 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
          reject(new Error(`cannot run ${bin}: ${(err as NodeJS.ErrnoException).code}`));
          return;
        }
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Exim's version, parsed from `exim -bV`. */
export interface EximVersion {
  /** As Exim prints it, e.g. `4.96`, `4.97.1`. */
  version: string;
  /** Numeric parts, e.g. [4, 96, 0]. */
  parts: [number, number, number];
  /** The first line of `exim -bV`. */
  banner: string;
}

/** Parses the first line of `exim -bV` ("Exim version 4.96 #2 built …"). */
export function parseEximVersion(text: string): EximVersion | undefined {
  const banner = text.split('\n', 1)[0] ?? '';
  const m = /Exim version (\d+)\.(\d+)(?:\.(\d+))?/.exec(banner);
  if (!m) return undefined;
  const parts: [number, number, number] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  return { version: `${m[1]}.${m[2]}${m[3] ? `.${m[3]}` : ''}`, parts, banner: banner.trim() };
}

/** True when version `a` is older than `b`. */
export function olderThan(a: readonly number[], b: readonly number[]): boolean {
  for (let i = 0; i < 3; i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x < y;
  }
  return false;
}

/** `exim -bV`: version and a configuration check. */
export async function eximCheckConfig(
  options: EximCommandOptions = {},
): Promise<{ ok: boolean; version?: EximVersion; output: string }> {
  const r = await runExim(['-bV'], options);
  const output = `${r.stdout}${r.stderr}`;
  const version = parseEximVersion(r.stdout);
  return { ok: r.code === 0, ...(version ? { version } : {}), output };
}

/** Reads main options with `exim -bP name…`. Booleans come back as `true`/`false`. */
export async function eximOptions(names: string[], options: EximCommandOptions = {}): Promise<Record<string, string>> {
  const r = await runExim(['-bP', ...names], options);
  const out: Record<string, string> = {};
  for (const line of r.stdout.split('\n')) {
    const kv = /^([a-z_0-9]+) = ?(.*)$/.exec(line);
    if (kv) {
      out[kv[1]!] = kv[2]!.trim();
      continue;
    }
    const flag = /^(no_)?([a-z_0-9]+)$/.exec(line.trim());
    if (flag) out[flag[2]!] = flag[1] ? 'false' : 'true';
  }
  return out;
}

/**
 * Whether the distribution patched a fix into an older Exim: Debian's changelog of the installed
 * package names the CVE or the fix (Debian 12's 4.96-15+deb12u4 carries CVE-2023-51766's fix).
 */
export async function distributionChangelogMentions(pattern: RegExp): Promise<string | undefined> {
  for (const file of ['/usr/share/doc/exim4-base/changelog.Debian.gz', '/usr/share/doc/exim4/changelog.Debian.gz']) {
    let text: string;
    try {
      text = gunzipSync(await readFile(file)).toString('utf8');
    } catch {
      continue;
    }
    const lines = text.split('\n');
    let pkg = '';
    for (const line of lines) {
      const head = /^exim4 \(([^)]+)\)/.exec(line);
      if (head) pkg = head[1]!;
      else if (pattern.test(line)) return `Debian exim4 ${pkg}`;
    }
  }
  return undefined;
}
