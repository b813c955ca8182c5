/**
 * ZBrainClient against a real `zbrain serve`: every call, its errors, log
 * following and event resumption.
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import {
  CancelOutcome,
  Code,
  DeadlineExceededError,
  InvalidArgumentError,
  JobState,
  NotFoundError,
  UnavailableError,
  WaitingCause,
  ZBrainClient,
} from "@zbrain/client";
import { fileURLToPath } from "node:url";
import { Harness, collect, freePort } from "./harness.js";

test("a submitted job reads back with its command, input, environment and limits", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());

  const submitted = await client.submit(["echo", "hi"], {
    org: "reading",
    input: { name: "Ada", tags: ["a", "b"] },
    env: { GREETING: "hello" },
    timeoutMs: 90_000,
    maxRetries: 2,
    priority: 5,
    labels: { team: "a" },
    concurrencyKey: "customer-42",
    concurrencyLimit: 2,
    requires: { gpu: "a100", region: "" },
    resources: { memoryBytes: 64 * 2 ** 20, cpuSeconds: 5 },
    network: true,
  });
  const job = await client.get(submitted.id);

  assert.equal(job.id, submitted.id);
  assert.equal(job.orgId, "reading");
  assert.equal(job.state, JobState.PENDING);
  assert.deepEqual(job.cmd, ["echo", "hi"]);
  assert.deepEqual(job.input, { name: "Ada", tags: ["a", "b"] });
  assert.deepEqual(job.env, { GREETING: "hello" });
  assert.equal(job.timeoutMs, 90_000);
  assert.equal(job.maxRetries, 2);
  assert.equal(job.priority, 5);
  assert.deepEqual(job.labels, { team: "a" });
  assert.equal(job.concurrencyKey, "customer-42");
  assert.equal(job.concurrencyLimit, 2);
  assert.deepEqual(job.requires, { gpu: "a100", region: "" });
  assert.equal(job.waitingReason, "waiting: no connected worker matches");
  assert.equal(job.waitingCause, WaitingCause.NO_WORKER);
  assert.deepEqual(job.resources, {
    memoryBytes: 64 * 2 ** 20,
    cpuSeconds: 5,
    processes: 0,
    openFiles: 0,
    fileSizeBytes: 0,
  });
  assert.equal(job.network, true);
  assert.ok(job.createTime instanceof Date);
  assert.equal(job.output, null);
});

test("a repeated requestId returns the job the first submit created", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());

  const first = await client.submit(["true"], { requestId: "deploy-42" });
  const again = await client.submit(["true"], { requestId: "deploy-42" });

  assert.equal(again.id, first.id);
  assert.equal(again.requestId, "deploy-42");
});

test("list iterates over every page, filtered by state and in either order", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  const ids = await client.submitBatch(
    Array.from({ length: 7 }, (_, i) => ({ cmd: ["echo", `${i}`], org: "listing" })),
  );
  await client.cancel(ids[1] ?? "");
  await client.cancel(ids[4] ?? "");

  const newestFirst = await collect(client.list({ org: "listing", pageSize: 3 }));
  const oldestFirst = await collect(client.list({ org: "listing", pageSize: 3, oldestFirst: true }));
  const canceled = await collect(client.list({ org: "listing", states: [JobState.CANCELED], pageSize: 1 }));
  const limited = await collect(client.list({ org: "listing", limit: 4, pageSize: 3 }));

  assert.deepEqual(
    newestFirst.map((job) => job.id),
    [...ids].reverse(),
  );
  assert.deepEqual(
    oldestFirst.map((job) => job.id),
    ids,
  );
  assert.deepEqual(canceled.map((job) => job.id).sort(), [ids[1], ids[4]].sort());
  assert.equal(limited.length, 4);
});

test("submitBatch stores all its jobs or none, naming the bad one's field", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());

  const ids = await client.submitBatch([
    { cmd: ["true"], org: "batch" },
    { cmd: ["false"], org: "batch", priority: 3 },
  ]);
  await assert.rejects(
    client.submitBatch([
      { cmd: ["true"], org: "batch" },
      { cmd: [], org: "batch" },
    ]),
    (error: unknown) =>
      error instanceof InvalidArgumentError && error.violations.some((violation) => violation.field === "jobs[1].cmd"),
  );

  assert.equal(ids.length, 2);
  assert.equal((await collect(client.list({ org: "batch" }))).length, 2, "the refused batch stored nothing");
});

test("cancel stops a waiting job at once, and says so when it had already finished", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  const job = await client.submit(["sleep", "60"]);

  const first = await client.cancel(job.id);
  const second = await client.cancel(job.id);

  assert.equal(first.outcome, CancelOutcome.CANCELED);
  assert.equal(first.job.state, JobState.CANCELED);
  assert.equal(second.outcome, CancelOutcome.ALREADY_TERMINAL);
  assert.equal((await client.wait(job.id)).state, JobState.CANCELED);
});

test("errors carry their status and every field the request got wrong", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());

  await assert.rejects(client.submit([], { env: { "1BAD": "x" }, maxRetries: -1 }), (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError);
    assert.equal(error.code, Code.InvalidArgument);
    assert.deepEqual(error.violations.map((violation) => violation.field).sort(), [
      "job.cmd",
      "job.env['1BAD']",
      "job.max_retries",
    ]);
    assert.ok(error.violations.every((violation) => violation.description.length > 0));
    return true;
  });
  await assert.rejects(client.get("01890a5d-ac96-774b-bcce-b302099a8057"), NotFoundError);
  await assert.rejects(client.get("not-a-job-id"), (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError);
    assert.deepEqual(
      error.violations.map((violation) => violation.field),
      ["job_id"],
    );
    return true;
  });
});

test("a server that is not there is UnavailableError saying what to check", async () => {
  const client = new ZBrainClient({ server: `127.0.0.1:${await freePort()}`, timeoutMs: 5_000 });
  try {
    await assert.rejects(client.get("01890a5d-ac96-774b-bcce-b302099a8057"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.match(error.message, /cannot reach the ZBrain server at 127\.0\.0\.1:\d+ .*zbrain serve/);
      return true;
    });
  } finally {
    client.close();
  }
});

test("a closed client leaves nothing behind that crashes the process later", async (t) => {
  const h = new Harness(t);
  const server = await h.server();
  const program = fileURLToPath(new URL("./fixtures/close-and-linger.js", import.meta.url));

  // The shortest keepalive interval, and a little longer to live on after close().
  const run = h.spawn("closing program", process.execPath, [program], {
    ZBRAIN_SERVER: server.address,
    ZBRAIN_CLIENT_KEEPALIVE: "5",
    LINGER_MS: "6500",
  });

  assert.equal(await run.exited, 0, run.said());
  assert.deepEqual(run.output, ["still alive"]);
});

test("a bad server address is InvalidArgumentError before anything is dialled", () => {
  assert.throws(() => new ZBrainClient({ server: "ipv4:10.0.0.1:1,10.0.0.2:2" }), InvalidArgumentError);
  assert.throws(() => new ZBrainClient({ server: "host:99999" }), /port must be between 1 and 65535/);
  assert.equal(new ZBrainClient({ server: "zbrain.internal" }).server, "zbrain.internal:50051");
});

test("logs follow a running job live until it ends, and resume after a sequence", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server({ args: ["--workers", "1"] }));
  const flag = join(await h.tempDir(), "go-on");
  // The job prints, waits for the test's go-ahead, and prints again.
  const script = 'echo line 1; echo line 2; while [ ! -e "$FLAG" ]; do sleep 0.05; done; echo line 3';
  const job = await client.submit(["sh", "-c", script], { env: { FLAG: flag } });

  const followed: string[] = [];
  for await (const line of client.logs(job.id, { follow: true })) {
    followed.push(line.text);
    if (followed.length === 2) {
      assert.equal((await client.get(job.id)).state, JobState.RUNNING, "lines arrive while the job runs");
      await writeFile(flag, "");
    }
  }

  assert.deepEqual(followed, ["line 1", "line 2", "line 3"]);
  assert.equal((await client.get(job.id)).state, JobState.SUCCEEDED, "the stream ended with the job");
  const resumed = await collect(client.logs(job.id, { after: 2 }));
  assert.deepEqual(
    resumed.map((line) => [line.sequence, line.text]),
    [[3, "line 3"]],
  );
});

test("events resume after the last sequence seen: nothing missed, nothing twice", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  const first = await client.submit(["true"], { org: "events" });

  let last = 0;
  for await (const event of client.events({ org: "events", follow: true })) {
    last = event.sequence;
    if (event.payload.case === "jobSubmitted") {
      break; // the stream is dropped here, as by a lost connection
    }
  }
  await client.cancel(first.id);
  const second = await client.submit(["true"], { org: "events" });
  const resumed = [];
  for await (const event of client.events({ org: "events", after: last, follow: true })) {
    resumed.push(event);
    if (event.payload.case === "jobSubmitted" && event.jobId === second.id) {
      break;
    }
  }
  const replay = await collect(client.events({ org: "events" }));

  assert.deepEqual(
    resumed.map((event) => event.sequence),
    replay.map((event) => event.sequence).filter((sequence) => sequence > last),
  );
  const cancel = resumed.find((event) => event.payload.case === "jobStateChanged");
  assert.equal(cancel?.jobId, first.id);
  assert.equal(cancel?.payload.case === "jobStateChanged" && cancel.payload.value.toState, JobState.CANCELED);

  // From the end: none of that history; a sequence as well is refused.
  assert.deepEqual(await collect(client.events({ org: "events", fromEnd: true })), []);
  await assert.rejects(collect(client.events({ org: "events", fromEnd: true, after: 1 })), InvalidArgumentError);
});

test("wait gives up after its timeout with DeadlineExceededError", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  const job = await client.submit(["true"], { org: "nobody-serves-this" });

  await assert.rejects(client.wait(job.id, { timeoutMs: 300 }), DeadlineExceededError);
});
