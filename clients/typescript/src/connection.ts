/**
 * How the client and the worker reach a server: the address, the token, TLS,
 * and the gRPC transport made from them. A {@link Worker} reuses its client's
 * transport, so connection options are given once.
 *
 * Every option falls back to the environment variables the `zbrain` command
 * line and the Python client read, so one deployment configures all three.
 *
 * @module
 */
import { readFileSync } from "node:fs";
import type { SecureClientSessionOptions } from "node:http2";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { InvalidArgumentError } from "./errors.js";

export const DEFAULT_PORT = 50051;
export const DEFAULT_SERVER = `127.0.0.1:${DEFAULT_PORT}`;

/** PEM contents (not file names) for a TLS connection, as Node's `tls` module takes them. */
export interface TlsOptions {
  /** The CA that signed the server's certificate; the system's CAs when unset. */
  readonly ca?: string | Buffer;
  /** A client certificate, for servers that require mutual TLS (needs `key`). */
  readonly cert?: string | Buffer;
  /** The client certificate's private key. */
  readonly key?: string | Buffer;
}

/** Where the server is and how to talk to it. */
export interface ConnectionOptions {
  /** `HOST:PORT` (port 50051 when left out). Default: ZBRAIN_SERVER, else 127.0.0.1:50051. */
  readonly server?: string;
  /** An API token, sent as `authorization: Bearer <token>`. Default: ZBRAIN_TOKEN. */
  readonly token?: string;
  /**
   * TLS: `true` trusts the system's CAs, an object gives PEM contents, `false`
   * forces plaintext. Default: TLS when ZBRAIN_TLS_CA, ZBRAIN_TLS_CERT or
   * ZBRAIN_TLS_KEY name PEM files, else plaintext.
   */
  readonly tls?: boolean | TlsOptions;
  /** Limit for each unary call, in milliseconds (streams have none). Default 30 000. */
  readonly timeoutMs?: number;
}

/** A connection's settings resolved against the environment, and its transport. */
export interface Connection {
  /** The address as dialled, `host:port`. */
  readonly server: string;
  readonly timeoutMs: number;
  readonly transport: Transport;
  /** Closes the HTTP/2 connection and every call on it. */
  close(): void;
}

const SCHEME_PREFIXES = ["http://", "https://", "grpc://", "grpcs://", "dns:///"];
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d*))?$/;

/**
 * A server address as `host:port`; InvalidArgumentError when it is not one.
 *
 * As in the Python client, `host` alone means port 50051 (not gRPC's 443) and
 * a URL-style prefix is dropped. gRPC-core's other targets (`ipv4:a,b`,
 * `unix:`) have no equivalent in Node's HTTP/2 client and are refused with a
 * message saying so, rather than dialled as a host name.
 */
export function parseServer(text: string): string {
  let target = text.trim();
  if (!target) {
    throw new InvalidArgumentError("the server address is empty; give HOST:PORT");
  }
  const prefix = SCHEME_PREFIXES.find((candidate) => target.startsWith(candidate));
  if (prefix !== undefined) {
    target = target.slice(prefix.length).replace(/\/+$/, "");
  } else if (/^(ipv4|ipv6|unix|unix-abstract|vsock|dns):/.test(target)) {
    throw new InvalidArgumentError(
      `${JSON.stringify(text)}: the TypeScript client dials one HOST:PORT; ` +
        "gRPC-core targets with several addresses or Unix sockets are not supported",
    );
  }
  const match = HOST_PORT.exec(target);
  if (match === null) {
    throw new InvalidArgumentError(
      `${JSON.stringify(text)} is not a server address; give HOST:PORT, e.g. ${DEFAULT_SERVER}`,
    );
  }
  const host = match[1] ?? "";
  const port = match[2] ? Number(match[2]) : DEFAULT_PORT;
  if (!(port > 0 && port < 65536)) {
    throw new InvalidArgumentError(`${JSON.stringify(text)}: the port must be between 1 and 65535`);
  }
  return `${host}:${port}`;
}

/**
 * Open a lazy connection: nothing is dialled until the first call, so a server
 * that is down shows up as UnavailableError then. A bad address or unreadable
 * TLS file is InvalidArgumentError at once.
 */
export function openConnection(options: ConnectionOptions = {}, env: NodeJS.ProcessEnv = process.env): Connection {
  const server = parseServer(options.server || env["ZBRAIN_SERVER"] || DEFAULT_SERVER);
  const token = options.token || env["ZBRAIN_TOKEN"] || undefined;
  const tls = tlsSettings(options.tls, env);
  const baseUrl = `${tls === undefined ? "http" : "https"}://${server}`;
  const sessionManager = new Http2SessionManager(baseUrl, keepalive(env), tls);
  const interceptors: Interceptor[] = token === undefined ? [] : [bearer(token)];
  const transport = createGrpcTransport({
    baseUrl,
    sessionManager,
    interceptors,
    // As the Python client: far above the server's own 16 MiB, so the server's
    // limit is the one that speaks.
    readMaxBytes: 64 << 20,
    writeMaxBytes: 64 << 20,
  });
  return {
    server,
    timeoutMs: options.timeoutMs ?? 30_000,
    transport,
    close: () => sessionManager.abort(),
  };
}

function bearer(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

/**
 * HTTP/2 PING keepalives, so a dead server is noticed on a quiet stream (a
 * worker's) in bounded time. ZBRAIN_CLIENT_KEEPALIVE and
 * ZBRAIN_CLIENT_KEEPALIVE_TIMEOUT (seconds, default 20 and 10) tune them as
 * for the Python client; the server accepts a ping every 5 seconds at most.
 *
 * Unlike the Python client, a connection without calls is not pinged: the
 * first call after a quiet spell checks it with a ping instead. Pinging idle
 * connections makes connect-node 2.1 re-arm its ping timer on a connection
 * that close() destroyed, and the ping then throws out of the timer,
 * crashing the process (connectrpc/connect-es#1795).
 */
function keepalive(env: NodeJS.ProcessEnv) {
  const intervalS = Number(env["ZBRAIN_CLIENT_KEEPALIVE"] || 20);
  const timeoutS = Number(env["ZBRAIN_CLIENT_KEEPALIVE_TIMEOUT"] || 10);
  return {
    pingIntervalMs: Math.max(5, intervalS) * 1000,
    pingTimeoutMs: timeoutS * 1000,
    pingIdleConnection: false,
  };
}

function tlsSettings(
  option: boolean | TlsOptions | undefined,
  env: NodeJS.ProcessEnv,
): SecureClientSessionOptions | undefined {
  let pem: TlsOptions | undefined;
  if (option === false) {
    return undefined;
  } else if (option === true) {
    pem = {};
  } else if (option !== undefined) {
    pem = option;
  } else {
    const files = { ca: env["ZBRAIN_TLS_CA"], cert: env["ZBRAIN_TLS_CERT"], key: env["ZBRAIN_TLS_KEY"] };
    if (!files.ca && !files.cert && !files.key) {
      return undefined;
    }
    pem = {
      ...(files.ca ? { ca: readPem(files.ca, "ZBRAIN_TLS_CA") } : {}),
      ...(files.cert ? { cert: readPem(files.cert, "ZBRAIN_TLS_CERT") } : {}),
      ...(files.key ? { key: readPem(files.key, "ZBRAIN_TLS_KEY") } : {}),
    };
  }
  if ((pem.cert === undefined) !== (pem.key === undefined)) {
    throw new InvalidArgumentError("a client certificate needs both tls.cert and tls.key");
  }
  return {
    ...(pem.ca !== undefined ? { ca: pem.ca } : {}),
    ...(pem.cert !== undefined ? { cert: pem.cert } : {}),
    ...(pem.key !== undefined ? { key: pem.key } : {}),
  };
}

function readPem(path: string, variable: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    throw new InvalidArgumentError(`cannot read ${path} (${variable}): ${(error as Error).message}`, {
      cause: error,
    });
  }
}

/**
 * How the client runs one unary call for a service of its own (`client.orgs`,
 * `client.templates`...): the connection's timeout applied, errors mapped.
 */
export type UnaryCaller = <T>(call: (options: { timeoutMs: number }) => Promise<T>) => Promise<T>;
