export { VectorTransport } from './winston/transport';
export type { FlushResult, TransportStats } from './winston/transport';
export type { VectorTransportOptions, TlsOptions } from './winston/options';
export { createVectorLogger, PYTHON_LEVELS } from './winston/logger';
export { guardLogger } from './winston/guard';
export type { VectorLogger, VectorLoggerOptions } from './winston/logger';
export { LogLevel } from './winston/levels';
export { VectorDeliveryError, VectorQueueError } from './errors';
export type { DeliveryAction } from './errors';
