/**
 * The TypeScript worker against a real `zbrain serve`, running jobs that
 * Python, the command line and this client submit: results, logs, retries,
 * cancellation, timeouts, draining, and a server restart.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { AttemptStoppedError, InvalidArgumentError, JobState, type JobContext, TransitionCause } from "@zbrain/client";
import { scripted } from "./fixtures/handler.js";
import { Harness, cli, collect, freePort, python, reachState } from "./harness.js";

test("the worker runs a job submitted from Python, with its input, environment and log lines", async (t) => {
  const h = new Harness(t);
  const server = await h.server();
  h.runWorker({ client: h.client(server), handler: scripted, orgs: ["from-python"] });

  // Python submits and waits; the output it prints is what the TS handler returned.
  const printed = await python(
    `
import json
from zbrain import SyncClient
with SyncClient.connect("${server.address}") as client:
    job = client.submit(["greet"], org="from-python", env={"GREETING": "hello"},
                        input={"echo": "from python", "lines": ["one", "two"]})
    done = client.wait(job.id, timeout=30)
    print(json.dumps({"id": job.id, "state": done.state.name, "output": done.output}))
`,
  );
  const { id, state, output } = JSON.parse(printed) as { id: string; state: string; output: unknown };

  assert.equal(state, "SUCCEEDED");
  assert.deepEqual(output, { echo: "from python", attempt: 1, env: { GREETING: "hello" } });
  const lines = await collect(h.client(server).logs(id));
  assert.deepEqual(
    lines.map((line) => line.text),
    ["one", "two"],
  );
});

test("the worker runs a job submitted from the command line", async (t) => {
  const h = new Harness(t);
  const server = await h.server();
  const client = h.client(server);
  h.runWorker({ client, handler: scripted, orgs: ["from-cli"] });

  const id = (
    await cli("submit", "--server", server.address, "--org", "from-cli", "--input", '{"echo": 42}', "--", "anything")
  ).trim();
  const done = await client.wait(id, { timeoutMs: 30_000 });

  assert.equal(done.state, JobState.SUCCEEDED);
  assert.deepEqual(done.output, { echo: 42, attempt: 1, env: {} });
  assert.equal(done.lastTransition?.cause, TransitionCause.SUCCEEDED);
});

test("a log line longer than 16 KiB reaches the server cut, with a visible marker", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  h.runWorker({ client, handler: scripted, orgs: ["long-lines"] });

  const job = await client.submit(["x"], { org: "long-lines", input: { lines: ["é".repeat(20_000), "short"] } });
  await client.wait(job.id, { timeoutMs: 30_000 });
  const [long, short] = await collect(client.logs(job.id));

  assert.ok(long?.text.endsWith(" …[line truncated]"), long?.text.slice(-40));
  assert.ok(Buffer.byteLength(long?.text ?? "") <= (16 << 10) + 32);
  assert.ok(long?.text.startsWith("éééé"));
  assert.equal(short?.text, "short");
});

test("a throwing handler fails the attempt with its error, and the retry's output stands", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  h.runWorker({ client, handler: scripted, orgs: ["retries"] });

  const job = await client.submit(["x"], { org: "retries", input: { failAttempts: 1, echo: "second" }, maxRetries: 1 });
  const done = await client.wait(job.id, { timeoutMs: 30_000 });
  const failures = (await collect(client.events({ org: "retries", topicPrefix: `jobs/${job.id}/state` }))).flatMap(
    (event) => (event.payload.case === "jobStateChanged" && event.payload.value.error ? [event.payload.value] : []),
  );

  assert.equal(done.state, JobState.SUCCEEDED);
  assert.deepEqual(done.output, { echo: "second", attempt: 2, env: {} });
  assert.equal(failures[0]?.error, "RangeError: failing attempt 1 as asked");
  assert.equal(failures[0]?.cause, TransitionCause.ATTEMPT_FAILED);
});

test("a canceled job's handler sees its signal abort, and the job ends CANCELED", async (t) => {
  const h = new Harness(t);
  const server = await h.server();
  const client = h.client(server);
  let stoppedWith: unknown;
  const handler = async (context: JobContext) => {
    await new Promise((resolve) => context.signal.addEventListener("abort", resolve, { once: true }));
    stoppedWith = context.signal.reason;
  };
  const { worker } = h.runWorker({ client, handler, orgs: ["cancels"] });
  const job = await client.submit(["x"], { org: "cancels" });
  await reachState(client, job.id, JobState.RUNNING, "cancels");

  await cli("cancel", "--server", server.address, job.id);
  const done = await client.wait(job.id, { timeoutMs: 30_000 });

  assert.equal(done.state, JobState.CANCELED);
  assert.ok(stoppedWith instanceof AttemptStoppedError);
  assert.equal(stoppedWith.reason, "canceled");
  assert.equal(worker.running, 0);
});

test("a handler that ignores its signal is reported stopped once the stop grace ends", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  h.runWorker({ client, handler: scripted, orgs: ["stubborn"], stopGraceMs: 200 });
  const job = await client.submit(["x"], { org: "stubborn", input: { sleepMs: 60_000, ignoreStop: true } });
  await reachState(client, job.id, JobState.RUNNING, "stubborn");

  await client.cancel(job.id);

  assert.equal((await client.wait(job.id, { timeoutMs: 10_000 })).state, JobState.CANCELED);
});

test("an attempt past the job's timeout is stopped and reported TIMED_OUT", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  h.runWorker({ client, handler: scripted, orgs: ["timeouts"] });

  const job = await client.submit(["x"], {
    org: "timeouts",
    input: { sleepMs: 60_000 },
    timeoutMs: 300,
    maxRetries: 0,
  });
  const done = await client.wait(job.id, { timeoutMs: 30_000 });

  assert.equal(done.state, JobState.FAILED);
  assert.equal(done.lastTransition?.cause, TransitionCause.ATTEMPT_TIMED_OUT);
  assert.match(done.lastError, /timed out after 0\.3s/);
});

test("many jobs across the slots each run exactly once, in lease and result batches", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  const ids = await client.submitBatch(
    Array.from({ length: 60 }, (_, i) => ({ cmd: ["x"], org: "batches", input: { echo: i } })),
  );
  const { worker } = h.runWorker({ client, handler: scripted, orgs: ["batches"], concurrency: 8 });

  const done = await Promise.all(ids.map((id) => client.wait(id, { timeoutMs: 60_000 })));

  assert.deepEqual(
    done.map((job) => [job.state, job.attempt, (job.output as { echo: number }).echo]),
    ids.map((_, i) => [JobState.SUCCEEDED, 1, i]),
  );
  assert.equal(worker.completed, 60);
});

test("a hello the server refuses ends the worker with InvalidArgumentError naming the field", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  const { running } = h.runWorker({ client, handler: scripted, workerId: "not a valid id" });

  await assert.rejects(running, (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError, String(error));
    assert.deepEqual(
      error.violations.map((violation) => violation.field),
      ["hello.worker_id"],
    );
    return true;
  });
});

test("on SIGTERM the worker drains: its running job finishes, it takes no new one, and it exits 0", async (t) => {
  const h = new Harness(t);
  const server = await h.server();
  const client = h.client(server);
  const process = h.worker(server, { WORKER_ORG: "drains" });
  await process.line(/connected to/);
  const running = await client.submit(["x"], { org: "drains", input: { sleepMs: 1500, echo: "finished" } });
  await reachState(client, running.id, JobState.RUNNING, "drains");

  process.signal("SIGTERM");
  await process.line(/draining/);
  const later = await client.submit(["x"], { org: "drains" });

  const done = await client.wait(running.id, { timeoutMs: 30_000 });
  assert.equal(done.state, JobState.SUCCEEDED);
  assert.equal((done.output as { echo: string }).echo, "finished");
  assert.equal(await process.exited, 0, process.said());
  assert.equal((await client.get(later.id)).state, JobState.PENDING, "a draining worker takes no new job");
});

test("a drain whose grace runs out interrupts the running job, which the server retries", async (t) => {
  const h = new Harness(t);
  const server = await h.server();
  const client = h.client(server);
  const process = h.worker(server, { WORKER_ORG: "interrupts", WORKER_GRACE_MS: "300" });
  await process.line(/connected to/);
  const job = await client.submit(["x"], { org: "interrupts", input: { sleepMs: 60_000 }, maxRetries: 1 });
  await reachState(client, job.id, JobState.RUNNING, "interrupts");

  process.signal("SIGTERM");

  assert.equal(await process.exited, 0, process.said());
  const after = await client.get(job.id);
  assert.equal(after.state, JobState.RETRYING);
  assert.equal(after.lastTransition?.cause, TransitionCause.INTERRUPTED);
  assert.match(after.lastError, /the worker shut down before the job finished/);
});

test("a worker restarted under its own id ends its predecessor's attempt as lost at once", async (t) => {
  const h = new Harness(t);
  const server = await h.server({ env: { ZBRAIN_LEASE_TTL: "60s" } });
  const client = h.client(server);
  const env = { WORKER_ORG: "restarted", WORKER_ID: "steady" };
  const first = h.worker(server, env);
  await first.line(/connected to/);
  const job = await client.submit(["x"], { org: "restarted", input: { sleepMs: 60_000 }, maxRetries: 0 });
  await reachState(client, job.id, JobState.RUNNING, "restarted");

  await first.kill(); // as the OOM killer would; a supervisor starts it again
  h.worker(server, env);
  // Far sooner than the 60 s lease; returned unstarted instead, it would run again.
  const done = await client.wait(job.id, { timeoutMs: 30_000 });

  assert.equal(done.state, JobState.FAILED, done.lastError);
  assert.equal(done.lastTransition?.cause, TransitionCause.WORKER_RESTARTED);
  assert.equal(done.attempt, 1);
});

test("the worker keeps its attempt through a server restart and claims the lease back", async (t) => {
  const h = new Harness(t);
  // A lease outlives the restart, so the running attempt is the worker's to claim.
  const options = { listen: `127.0.0.1:${await freePort()}`, env: { ZBRAIN_LEASE_TTL: "30s" } };
  const first = await h.server(options);
  const client = h.client(first);
  h.runWorker({ client, handler: scripted, orgs: ["restarts"], reconnectMaxMs: 500 });
  const job = await client.submit(["x"], { org: "restarts", input: { sleepMs: 2000, lastLines: ["finished"] } });
  await reachState(client, job.id, JobState.RUNNING, "restarts");

  await first.child.kill();
  await h.server({ ...options, dataDir: first.dataDir });
  const done = await client.wait(job.id, { timeoutMs: 30_000 });

  assert.equal(done.state, JobState.SUCCEEDED, done.lastError);
  assert.equal(done.attempt, 1, "the attempt carried on through the new connection");
  // Lines written just before the crash may be lost with it; these came after.
  assert.deepEqual(
    (await collect(client.logs(job.id))).map((line) => line.text),
    ["finished"],
  );
});
