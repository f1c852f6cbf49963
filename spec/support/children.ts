import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after } from 'node:test';

export interface ChildConfig {
  dbPath: string;
  url: string;
  run: number | string;
  count: number;
  burst?: number;
  pad?: number;
  mode?: 'close' | 'flush' | 'hang' | 'keep' | 'memory';
  options?: Record<string, unknown>;
}

/** A logging child process (spec/support/child-logger.cjs) and what it has said so far. */
export class LoggingChild {
  readonly proc: ChildProcess;
  /** Record numbers whose log() callback fired: committed, so they must never be lost. */
  readonly acked: number[] = [];
  readonly lines: string[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(cfg: ChildConfig, nodeArgs: string[] = []) {
    this.proc = spawn(process.execPath, [...nodeArgs, join(__dirname, 'child-logger.cjs')], {
      env: { ...process.env, WV_CHILD: JSON.stringify(cfg) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      if (line.startsWith('ack ')) this.acked.push(Number(line.slice(4)));
      else this.lines.push(line);
    });
    this.proc.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    after(() => {
      if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    });
  }

  /** Resolves when the child has printed `line` (or rejects after `timeoutMs`). */
  async waitFor(check: (child: LoggingChild) => boolean, timeoutMs = 20_000, what = 'child'): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (!check(this)) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; stderr: ${this.stderr.slice(0, 2000)}`);
      if (this.proc.exitCode !== null && !check(this)) throw new Error(`child exited (${this.proc.exitCode}) before ${what}: ${this.stderr.slice(0, 2000)}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

/**
 * Conservation of records: every acknowledged id arrived, nothing unknown arrived, and how many
 * arrived more than once.
 */
export function conservation(
  acknowledged: Iterable<string>,
  mayHaveBeenLogged: (id: string) => boolean,
  received: readonly string[],
): { missing: string[]; unknown: string[]; duplicates: number } {
  const seen = new Map<string, number>();
  for (const id of received) seen.set(id, (seen.get(id) ?? 0) + 1);
  const missing = [...acknowledged].filter((id) => !seen.has(id));
  const unknown = [...seen.keys()].filter((id) => !mayHaveBeenLogged(id));
  const duplicates = [...seen.values()].reduce((n, c) => n + (c - 1), 0);
  return { missing, unknown, duplicates };
}

/** For each producer, are the first arrivals of its records in increasing order? */
export function inOrderPerProducer(received: readonly string[]): boolean {
  const last = new Map<string, number>();
  const seen = new Set<string>();
  for (const id of received) {
    if (seen.has(id)) continue;
    seen.add(id);
    const [producer, seqText] = id.split(':');
    const seq = Number(seqText);
    if ((last.get(producer!) ?? -1) >= seq) return false;
    last.set(producer!, seq);
  }
  return true;
}
