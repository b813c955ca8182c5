/**
 * The calls beyond jobs against a real `zbrain serve`: organisation settings
 * (`client.orgs`), connected workers, job graphs and reruns.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  DependencyCondition,
  InvalidArgumentError,
  JobState,
  PermissionDeniedError,
  TransitionCause,
  WaitingCause,
} from "@zbrain/client";
import { scripted } from "./fixtures/handler.js";
import { Harness, collect, token } from "./harness.js";

test("an admin sets an organisation's limits and pauses, and a client of it reads them but changes nothing", async (t) => {
  const h = new Harness(t);
  const dataDir = await h.tempDir();
  const admin = await token(dataDir, "ops", "admin");
  const member = await token(dataDir, "team-a", "client");
  const server = await h.server({ dataDir });
  const orgs = h.client(server, { token: admin }).orgs;
  const asMember = h.client(server, { token: member });

  const updated = await orgs.update("team-a", { maxRunningJobs: 3, maxStartsPerSecond: 2.5, maxLogBytes: 2 ** 40 });
  const paused = await orgs.pause("team-a", { tier: "batch" });
  const read = await asMember.orgs.get();

  assert.equal(updated.orgId, "team-a");
  assert.equal(updated.maxRunningJobs, 3);
  assert.equal(updated.maxStartsPerSecond, 2.5);
  assert.equal(updated.maxLogBytes, 2 ** 40);
  assert.deepEqual(paused.pausedSelectors, [{ tier: "batch" }]);
  assert.equal(read.orgId, "team-a");
  assert.equal(read.maxRunningJobs, 3);
  assert.deepEqual(read.pausedSelectors, [{ tier: "batch" }]);
  assert.ok(read.updateTime instanceof Date);
  await assert.rejects(asMember.orgs.update("team-a", { maxRunningJobs: 100 }), PermissionDeniedError);
  await assert.rejects(asMember.orgs.pause("team-a"), PermissionDeniedError);
});

test("a paused organisation's job waits saying so, and runs once it is resumed", async (t) => {
  const h = new Harness(t);
  const server = await h.server();
  const client = h.client(server);
  h.runWorker({ client, handler: scripted, orgs: ["held"] });

  const paused = await client.orgs.pause("held");
  const job = await client.submit(["x"], { org: "held" });
  const waiting = await client.get(job.id);
  const resumed = await client.orgs.resume("held");
  const done = await client.wait(job.id, { timeoutMs: 30_000 });

  assert.equal(paused.paused, true);
  assert.equal(waiting.waitingReason, "waiting: the organisation is paused");
  assert.equal(waiting.waitingCause, WaitingCause.PAUSED);
  assert.equal(resumed.paused, false);
  assert.equal(done.state, JobState.SUCCEEDED);
});

test("org settings a field cannot hold, or an empty selector, are InvalidArgumentError naming the field", async (t) => {
  const h = new Harness(t);
  const orgs = h.client(await h.server()).orgs;

  await assert.rejects(orgs.update("o", { maxRunningJobs: 2 ** 31 }), (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError);
    assert.equal(error.violations[0]?.field, "maxRunningJobs");
    return true;
  });
  await assert.rejects(orgs.update("o", { retentionDays: 1.5 }), InvalidArgumentError);
  await assert.rejects(orgs.update("o", { maxRunningJobs: -1 }), InvalidArgumentError);
  await assert.rejects(orgs.pause("o", {}), InvalidArgumentError);
});

test("workers() lists the connected workers with their organisations, labels and slots", async (t) => {
  const h = new Harness(t);
  const server = await h.server();
  const client = h.client(server);
  h.runWorker({
    client,
    handler: scripted,
    orgs: ["fleet"],
    workerId: "ts-w1",
    labels: { gpu: "a100" },
    concurrency: 2,
  });
  // Once a job of its org has run, the worker is surely registered.
  await client.wait((await client.submit(["x"], { org: "fleet" })).id, { timeoutMs: 30_000 });

  const workers = await collect(client.workers({ org: "fleet" }));
  const elsewhere = await collect(client.workers({ org: "nobody" }));

  assert.equal(workers.length, 1);
  assert.equal(workers[0]?.id, "ts-w1");
  assert.deepEqual(workers[0]?.orgIds, ["fleet"]);
  assert.deepEqual(workers[0]?.labels, { gpu: "a100" });
  assert.equal(workers[0]?.slots, 2);
  assert.equal(workers[0]?.draining, false);
  assert.ok(workers[0]?.connectTime instanceof Date);
  assert.deepEqual(elsewhere, []);
});

test("a batch is a graph: a job waits BLOCKED for the one its ref names, then runs, and a rerun links back", async (t) => {
  const h = new Harness(t);
  const server = await h.server();
  const client = h.client(server);

  const [parentId = "", childId = "", afterAnyId = ""] = await client.submitBatch([
    { cmd: ["parent"], org: "graph", ref: "parent", input: { failAttempts: 1 }, maxRetries: 0 },
    { cmd: ["child"], org: "graph", dependsOn: [{ ref: "parent" }] },
    { cmd: ["cleanup"], org: "graph", dependsOn: [{ ref: "parent", condition: DependencyCondition.FINISHED }] },
  ]);
  // No worker serves the org yet, so the parent cannot have finished.
  assert.equal((await client.get(childId)).state, JobState.BLOCKED);
  h.runWorker({ client, handler: scripted, orgs: ["graph"] });

  const parent = await client.wait(parentId, { timeoutMs: 30_000 });
  const child = await client.wait(childId, { timeoutMs: 30_000 });
  const afterAny = await client.wait(afterAnyId, { timeoutMs: 30_000 });
  const rerun = await client.rerun(parentId, { input: { echo: "again" } });
  const rerunDone = await client.wait(rerun.id, { timeoutMs: 30_000 });

  assert.equal(parent.state, JobState.FAILED);
  assert.equal(child.state, JobState.CANCELED);
  assert.equal(child.lastTransition?.cause, TransitionCause.DEPENDENCY_FAILED);
  assert.equal(afterAny.state, JobState.SUCCEEDED);
  assert.equal(rerun.rerunOf, parentId);
  assert.notEqual(rerun.id, parentId);
  assert.deepEqual(rerunDone.input, { echo: "again" });
  assert.equal(rerunDone.state, JobState.SUCCEEDED);
});
