/** The benchmark's workload: one message, a few strings and numbers as meta, one nested object. */
export const MESSAGE = 'user checkout completed';

/** The meta of record `i`. */
export const record = (i: number) => ({
  user_id: i,
  action: 'checkout',
  amount: 129.5,
  currency: 'EUR',
  request: { method: 'POST', path: '/api/cart/checkout', status: 200, duration_ms: 42 },
});

/** BENCH_VECTOR_OPTIONS: VectorTransport options to try (JSON), over the benchmark's own. */
export const VECTOR_OPTIONS = JSON.parse(process.env.BENCH_VECTOR_OPTIONS ?? '{}') as object;

/** How long a steady run logs, and when its measured part starts (the first seconds warm up). */
export const STEADY_MS = 8000;
export const STEADY_WARMUP_MS = 3000;

/**
 * Records each contender logs before a flood (see bench/contender.ts): they reach the receiver too.
 * A multiple of the batch sizes (100 and 1000), so no contender's last batch waits for its interval.
 */
export const WARM_UP_RECORDS = 1000;
