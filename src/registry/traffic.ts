import type { FetchOperation } from '../metrics/store-metrics.js';

/** What a registry request was made for (the metrics' `operation` label). */
export type RegistryOperation = FetchOperation;

/** One HTTP request sent to a registry or to where it redirected (every attempt: a retry is a request too). */
export interface RequestReport {
  /** Undefined for requests the caller did not label (auth tokens, HEADs for a size, pushes). */
  operation: RegistryOperation | undefined;
  method: string;
  /** Undefined when no response came (a refused connection, a timeout). */
  status: number | undefined;
  /** Body bytes of a 2xx answer to a GET that its handler took (its Content-Length); 0 otherwise. */
  bytes: number;
  /** From sending the request to the handler being done with the body. */
  seconds: number;
}

export type RetryReason =
  /** A 429 or 5xx answer. */
  | 'status'
  /** The connection failed (reset, refused, timed out). */
  | 'network'
  /** The body was cut short or did not match its Content-Range. */
  | 'body'
  /** A 401: asked again with fresh credentials. */
  | 'auth'
  /** The answer left out bytes that were asked for (a part missing, a wrong Content-Range). */
  | 'missing_range';

export interface RetryReport {
  operation: RegistryOperation | undefined;
  reason: RetryReason;
}

export type RangeSplitReason =
  /** Single-range mode (configured, or remembered for the host): scattered ranges go one request each. */
  | 'single_range_mode'
  /** The registry answered a multi-range request with 400. */
  | 'refused'
  /** The registry answered a multi-range request with fewer parts than asked. */
  | 'partial_answer';

/** Ranges read together that went out as several requests instead of one. */
export interface RangeSplitReport {
  operation: RegistryOperation | undefined;
  reason: RangeSplitReason;
  /** Ranges that were to go in one request… */
  ranges: number;
  /** …and the requests they took. */
  requests: number;
}

/**
 * The one place registry traffic is reported: the client and RemoteBlob call
 * it for each request, retry and range split. The daemon passes one that
 * feeds the Prometheus metrics; others (tests, the CLI) pass their own or
 * none.
 */
export interface RegistryTraffic {
  request(r: RequestReport): void;
  retry(r: RetryReport): void;
  rangeSplit(r: RangeSplitReport): void;
}

export const NO_TRAFFIC: RegistryTraffic = {
  request() {},
  retry() {},
  rangeSplit() {},
};
