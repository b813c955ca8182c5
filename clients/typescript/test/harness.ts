/**
 * What the tests start and stop: real `zbrain serve` processes on free
 * loopback ports, each with a data directory of its own, the `zbrain` command
 * line and the Python client from the repository's .venv, and the fixture
 * worker process. Everything a test starts is stopped by `t.after`.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { EventEmitter, once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { type JobState, Worker, type WorkerOptions, ZBrainClient } from "@zbrain/client";

const run = promisify(execFile);

/** The repository root (this file runs from clients/typescript/build/test/). */
export const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
export const ZBRAIN = join(ROOT, ".venv", "bin", "zbrain");
export const PYTHON = join(ROOT, ".venv", "bin", "python");
/** The fixture worker program, compiled beside this file. */
export const WORKER_PROGRAM = fileURLToPath(new URL("./fixtures/worker.js", import.meta.url));

/** Short leases and retries keep the end-to-end tests quick (as the Python tests' TEST_CONFIG). */
const SERVER_ENV = {
  ZBRAIN_LEASE_TTL: "3s",
  ZBRAIN_POLL_INTERVAL: "200ms",
  ZBRAIN_RETRY_BASE: "50ms",
  ZBRAIN_RETRY_CAP: "200ms",
  ZBRAIN_TIMEOUT_GRACE: "1s",
};

/** A child process whose output is kept, to show when a test fails. */
export class Child {
  readonly output: string[] = [];
  /** Resolves with the exit code (null when a signal ended it) once its output is read. */
  readonly exited: Promise<number | null>;
  private readonly lines = new EventEmitter();

  constructor(
    readonly name: string,
    readonly process: ChildProcess,
  ) {
    this.exited = once(process, "close").then(([code]) => code as number | null);
    void this.exited.then(() => this.lines.emit("close"));
    for (const stream of [process.stdout, process.stderr]) {
      if (stream) {
        createInterface({ input: stream }).on("line", (line) => {
          this.output.push(line);
          this.lines.emit("line", line);
        });
      }
    }
  }

  /** Resolves with the first line of output that matches; rejects if the process ends first. */
  line(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const settle = (outcome: () => void) => {
        clearTimeout(timer);
        this.lines.off("line", onLine).off("close", onClose);
        outcome();
      };
      const onLine = (line: string) => {
        const match = pattern.exec(line);
        if (match) {
          settle(() => resolve(match));
        }
      };
      const onClose = () =>
        settle(() => reject(new Error(`${this.name} ended without printing ${pattern}:\n${this.said()}`)));
      const timer = setTimeout(
        () => settle(() => reject(new Error(`${this.name} did not print ${pattern} in time:\n${this.said()}`))),
        timeoutMs,
      );
      this.lines.on("line", onLine).on("close", onClose);
      this.output.forEach(onLine);
    });
  }

  said(): string {
    return this.output.map((line) => `  | ${line}`).join("\n");
  }

  signal(signal: NodeJS.Signals): void {
    this.process.kill(signal);
  }

  /**
   * SIGKILL to its whole process group (a server's local worker pool too,
   * which would otherwise hold its output open), and wait for the end.
   */
  async kill(): Promise<void> {
    if (this.process.exitCode === null && this.process.signalCode === null && this.process.pid !== undefined) {
      process.kill(-this.process.pid, "SIGKILL");
    }
    await this.exited;
  }
}

export interface ServerOptions {
  /** `--listen`; a free port when unset. */
  readonly listen?: string;
  /** Reuse a data directory (to restart a server); a fresh one when unset. */
  readonly dataDir?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly args?: readonly string[];
}

/** A running `zbrain serve`. */
export interface TestServer {
  readonly address: string;
  readonly dataDir: string;
  readonly child: Child;
}

/** Starts servers and processes for one test, and stops them all when it ends. */
export class Harness {
  private readonly children: Child[] = [];
  private readonly workers: { readonly worker: Worker; readonly running: Promise<void> }[] = [];
  private readonly clients: ZBrainClient[] = [];
  private readonly directories: string[] = [];

  constructor(t: TestContext) {
    t.after(() => this.cleanup());
  }

  async tempDir(prefix = "zbrain-ts-"): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    this.directories.push(dir);
    return dir;
  }

  async server(options: ServerOptions = {}): Promise<TestServer> {
    const dataDir = options.dataDir ?? (await this.tempDir());
    const child = this.spawn(
      "zbrain serve",
      ZBRAIN,
      ["serve", "--listen", options.listen ?? "127.0.0.1:0", "--data-dir", dataDir, ...(options.args ?? [])],
      { ...SERVER_ENV, ...options.env },
    );
    const [, address] = await child.line(/ZBrain listening on (\S+)/);
    return { address: address ?? "", dataDir, child };
  }

  /** A client of `server`, closed when the test ends. */
  client(server: TestServer | string, options: { token?: string; timeoutMs?: number } = {}): ZBrainClient {
    const client = new ZBrainClient({
      server: typeof server === "string" ? server : server.address,
      timeoutMs: options.timeoutMs ?? 10_000,
      ...(options.token === undefined ? {} : { token: options.token }),
    });
    this.clients.push(client);
    return client;
  }

  /**
   * A worker in this process, serving until the test ends. Signals stay the
   * test runner's; `running` is its `run()`.
   */
  runWorker(options: WorkerOptions): { readonly worker: Worker; readonly running: Promise<void> } {
    const worker = new Worker({ signals: [], logger: quiet, ...options });
    const started = { worker, running: worker.run() };
    this.workers.push(started);
    return started;
  }

  /** The fixture worker (test/fixtures/worker.ts) in a process of its own. */
  worker(server: TestServer, env: Readonly<Record<string, string>>): Child {
    return this.spawn("TS worker", process.execPath, [WORKER_PROGRAM], { ZBRAIN_SERVER: server.address, ...env });
  }

  spawn(name: string, command: string, args: readonly string[], env: Readonly<Record<string, string>> = {}): Child {
    const child = new Child(
      name,
      spawn(command, args, {
        env: { ...process.env, PYTHONUNBUFFERED: "1", ...env },
        stdio: ["ignore", "pipe", "pipe"],
        detached: true, // a process group of its own, for kill()
      }),
    );
    this.children.push(child);
    return child;
  }

  private async cleanup(): Promise<void> {
    for (const { worker, running } of this.workers) {
      await worker.shutdown(0);
      await running.catch(() => undefined); // a test that expected it to fail has said so
    }
    for (const client of this.clients) {
      client.close();
    }
    await Promise.all(this.children.map((child) => child.kill()));
    await Promise.all(this.directories.map((dir) => rm(dir, { recursive: true, force: true })));
  }
}

/** In-process workers say nothing unless a test fails: their words would bury the report. */
const quiet = { info: () => undefined, warn: () => undefined };

/** Run the `zbrain` command line; resolves with its standard output. */
export async function cli(...args: string[]): Promise<string> {
  const { stdout } = await run(ZBRAIN, args, { timeout: 60_000 });
  return stdout;
}

/** A token made on the server's host, before it starts (`zbrain token create --data-dir`). */
export async function token(dataDir: string, org: string, role: "admin" | "client" | "worker"): Promise<string> {
  const printed = await cli("token", "create", "--data-dir", dataDir, "--org", org, "--role", role);
  return printed.split("\n")[0] ?? "";
}

/** Run Python code with the repository's client installed; resolves with its standard output. */
export async function python(code: string, env: Readonly<Record<string, string>> = {}): Promise<string> {
  const { stdout } = await run(PYTHON, ["-c", code], { env: { ...process.env, ...env }, timeout: 60_000 });
  return stdout;
}

/** A free loopback port, for a server that must come back on the same address. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, "close");
  return port;
}

/** Every item of an async iterable. */
export async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) {
    all.push(item);
  }
  return all;
}

/**
 * Resolves once the job reaches `state`: it replays the job's state events
 * from the start and follows them, so no transition can slip between a look
 * and a subscription.
 */
export async function reachState(client: ZBrainClient, jobId: string, state: JobState, org = ""): Promise<void> {
  const signal = AbortSignal.timeout(20_000);
  for await (const event of client.events({ org, topicPrefix: `jobs/${jobId}/state`, follow: true, signal })) {
    if (event.payload.case === "jobStateChanged" && event.payload.value.toState === state) {
      return;
    }
  }
}
