/** Python's logging levels, as LogSend exports them. */
export const LogLevel = Object.freeze({
  DEBUG: 10,
  INFO: 20,
  WARNING: 30,
  ERROR: 40,
  CRITICAL: 50,
} as const);
export type LogLevel = (typeof LogLevel)[keyof typeof LogLevel];

/** winston's three built-in level sets: name → priority (0 = most severe). */
const WINSTON_SETS: Record<string, Record<string, number>> = {
  npm: { error: 0, warn: 1, info: 2, http: 3, verbose: 4, debug: 5, silly: 6 },
  syslog: { emerg: 0, alert: 1, crit: 2, error: 3, warning: 4, notice: 5, info: 6, debug: 7 },
  cli: { error: 0, warn: 1, help: 2, data: 3, info: 4, debug: 5, prompt: 6, verbose: 7, input: 8, silly: 9 },
};

/** level_num for each built-in set (docs/record-format.md). */
const BUILTIN_NUMBERS: Record<string, Record<string, number>> = {
  npm: { error: 40, warn: 30, info: 20, http: 15, verbose: 13, debug: 10, silly: 5 },
  syslog: { emerg: 60, alert: 55, crit: 50, error: 40, warning: 30, notice: 25, info: 20, debug: 10 },
  cli: { error: 40, warn: 30, help: 25, data: 22, info: 20, debug: 10, prompt: 9, verbose: 8, input: 7, silly: 5 },
};

/** Level names Python knows, and what it calls them. */
const PYTHON: Record<string, [string, number]> = {
  debug: ['DEBUG', 10],
  info: ['INFO', 20],
  warning: ['WARNING', 30],
  warn: ['WARNING', 30],
  error: ['ERROR', 40],
  critical: ['CRITICAL', 50],
  crit: ['CRITICAL', 50],
  fatal: ['CRITICAL', 50],
};

export interface LevelInfo {
  readonly name: string;
  readonly num: number;
}

function sameSet(a: Record<string, number>, b: Record<string, number>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => a[k] === b[k]);
}

/**
 * Resolves `level` and `level_num` for each level of one logger's level set, once.
 *
 * A built-in set uses its table. In any other set a level gets, in this order: the user's
 * `levelNumbers`, Python's number for a Python name, or a number from its position: it is placed
 * between the nearest numbered levels above and below it (evenly spaced, rounded), or 5 per step
 * beyond the most severe numbered level, or 1 per step (never below 1) beyond the least severe;
 * with nothing numbered at all, the least severe level is 10 and each step up adds 10.
 */
export class LevelTable {
  private readonly table = new Map<string, LevelInfo>();

  constructor(levels: Record<string, number> | undefined, userNumbers: Readonly<Record<string, number>>) {
    const set = levels ?? WINSTON_SETS.npm!;
    const builtin = Object.keys(WINSTON_SETS).find((k) => sameSet(WINSTON_SETS[k]!, set));
    const known: Record<string, number> = builtin ? { ...BUILTIN_NUMBERS[builtin]! } : {};
    // Most severe first; ties keep insertion order.
    const ordered = Object.keys(set).sort((a, b) => set[a]! - set[b]!);
    for (const name of ordered) {
      if (!builtin && known[name] === undefined && PYTHON[name.toLowerCase()]) known[name] = PYTHON[name.toLowerCase()]![1];
    }
    for (const [name, num] of Object.entries(userNumbers)) known[name] = num;

    const nums = ordered.map((name) => known[name]);
    const numbered = nums.flatMap((n, i) => (n === undefined ? [] : [i]));
    for (let i = 0; i < ordered.length; i++) {
      if (nums[i] !== undefined) continue;
      const above = numbered.filter((j) => j < i).pop();
      const below = numbered.find((j) => j > i);
      let n: number;
      if (above !== undefined && below !== undefined) {
        n = Math.round(nums[above]! + ((nums[below]! - nums[above]!) * (i - above)) / (below - above));
      } else if (below !== undefined) {
        n = nums[below]! + 5 * (below - i);
      } else if (above !== undefined) {
        n = Math.max(1, nums[above]! - (i - above));
      } else {
        n = 10 * (ordered.length - i);
      }
      nums[i] = n;
    }
    ordered.forEach((name, i) => {
      const python = PYTHON[name.toLowerCase()];
      this.table.set(name, { name: python ? python[0] : name.toUpperCase(), num: nums[i]! });
    });
    for (const [name, num] of Object.entries(userNumbers)) {
      if (!this.table.has(name)) this.table.set(name, { name: PYTHON[name.toLowerCase()]?.[0] ?? name.toUpperCase(), num });
    }
  }

  /** A level outside the set (a caller writing to the transport directly) still gets a stable answer. */
  get(level: unknown): LevelInfo {
    const name = typeof level === 'string' ? level : String(level);
    const hit = this.table.get(name);
    if (hit) return hit;
    const python = PYTHON[name.toLowerCase()];
    const info = { name: python ? python[0] : name.toUpperCase(), num: python ? python[1] : 0 };
    if (this.table.size < 1000) this.table.set(name, info);
    return info;
  }
}
