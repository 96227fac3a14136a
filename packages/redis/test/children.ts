// Child processes the Redis tests start (real workers and enqueuers, killed for real), and what
// those tests wait on.
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const tsx = pathToFileURL(join(root, 'node_modules/tsx/dist/loader.mjs')).href;
const alias = new URL('./fixtures/alias.mjs', import.meta.url).href;

const children: ChildProcess[] = [];

/** Kills (SIGKILL, by PID) every child process started here that is still running. */
export function killChildren(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

/** Starts a fixture (`fixtures/<name>.ts`) with `env`; calls `onLine` with each line it prints. */
export function startFixture(name: string, env: Record<string, string>, onLine: (line: string) => void): ChildProcess {
  const script = fileURLToPath(new URL(`./fixtures/${name}.ts`, import.meta.url));
  const child = spawn(process.execPath, ['--import', tsx, '--import', alias, script], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let buffer = '';
  child.stdout!.on('data', (d: Buffer) => {
    buffer += d.toString();
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    for (const line of lines) onLine(line);
  });
  return child;
}

/** A worker process (`fixtures/worker.ts`); `sent` lists the Message-IDs it sent. */
export interface WorkerProcess {
  child: ChildProcess;
  sent: string[];
  /** SIGTERM, then waits for it to exit. */
  stop(): Promise<void>;
}

/** Starts a worker process; resolves once it is ready. */
export function startWorker(config: Record<string, unknown>): Promise<WorkerProcess> {
  const sent: string[] = [];
  let err = '';
  return new Promise((resolve, reject) => {
    const child = startFixture('worker', { MAILVIA_WORKER: JSON.stringify(config) }, (line) => {
      if (line === 'ready')
        resolve({
          child,
          sent,
          stop: async () => {
            if (child.exitCode !== null) return;
            const exited = new Promise((r) => child.once('exit', r));
            child.kill('SIGTERM');
            await exited;
          },
        });
      else if (line.startsWith('sent ')) sent.push(line.slice(5));
    });
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.once('exit', (code) => reject(new Error(`worker exited (${code}) before it was ready: ${err}`)));
  });
}

/** Waits until `check` holds, or fails naming `what`. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A small mail whose subject is its text. */
export const mail = (subject: string) => ({
  from: 'school@example.org',
  to: 'parent@example.org',
  subject,
  text: subject,
});
