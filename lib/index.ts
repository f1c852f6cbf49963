export { VectorTransport } from './transport';
export type { FlushResult, TransportStats } from './transport';
export type { VectorTransportOptions, TlsOptions } from './options';
export { createVectorLogger, PYTHON_LEVELS } from './logger';
export { guardLogger } from './guard';
export type { VectorLogger, VectorLoggerOptions } from './logger';
export { LogLevel } from './levels';
export { VectorDeliveryError, VectorQueueError } from './errors';
export type { DeliveryAction } from './errors';
