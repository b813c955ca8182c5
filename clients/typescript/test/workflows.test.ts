/**
 * Templates and schedules from TypeScript against a real `zbrain serve`:
 * `client.templates` and `client.schedules`.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { InvalidArgumentError, NotFoundError, OverlapPolicy, ParameterType } from "@zbrain/client";
import { Harness, collect } from "./harness.js";

test("a template is stored in versions and submits a job with its parameters filled in", async (t) => {
  const h = new Harness(t);
  const templates = h.client(await h.server()).templates;

  const first = await templates.create(
    "greet",
    { cmd: ["echo", "hello {{ who }}", "{{ times }}"], input: { who: "{{ who }}", times: "{{ times }}" } },
    {
      description: "says hello",
      parameters: [
        { name: "who", required: true },
        { name: "times", type: ParameterType.INTEGER, default: 2 },
      ],
    },
  );
  const second = await templates.create("greet", { cmd: ["echo", "{{ who }}"] }, { parameters: [{ name: "who" }] });
  const job = await templates.submit("greet", { who: "world; rm -rf /" }, { version: 1 });
  const read = await templates.get("greet", { version: 1 });
  const listed = await collect(templates.list());

  assert.equal(first.version, 1);
  assert.equal(second.version, 2);
  assert.deepEqual(job.cmd, ["echo", "hello world; rm -rf /", "2"]);
  assert.deepEqual(job.input, { who: "world; rm -rf /", times: 2 });
  assert.deepEqual(read.job.cmd, ["echo", "hello {{ who }}", "{{ times }}"]);
  assert.equal(read.description, "says hello");
  assert.deepEqual(read.parameters[1], {
    name: "times",
    type: ParameterType.INTEGER,
    required: false,
    default: 2,
    description: "",
  });
  assert.deepEqual(
    listed.map((template) => [template.name, template.version]),
    [["greet", 2]],
  );
  await assert.rejects(templates.submit("greet", {}, { version: 1 }), (error: unknown) => {
    assert.ok(error instanceof InvalidArgumentError);
    assert.equal(error.violations[0]?.field, "parameters[who]");
    return true;
  });
  assert.equal(await templates.delete("greet"), 2);
  await assert.rejects(templates.get("greet"), NotFoundError);
});

test("a schedule is created, paused, resumed, triggered and deleted", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  const schedules = client.schedules;

  const created = await schedules.create("hourly", {
    everyMs: 3_600_000,
    job: { cmd: ["true"], labels: { team: "a" } },
    overlap: OverlapPolicy.ALLOW,
  });
  const paused = await schedules.pause("hourly");
  const resumed = await schedules.resume("hourly");
  const before = new Date();
  const triggered = await schedules.trigger("hourly");
  await client.submit(["not", "scheduled"], { labels: { team: "a" } });
  const read = await schedules.get("hourly");
  const itsJobs = await collect(client.list({ labels: { "zbrain.schedule": "hourly" } }));
  const earlier = await collect(client.list({ labels: { team: "a" }, createdBefore: before }));
  const since = await collect(client.list({ labels: { team: "a" }, createdAfter: before }));
  const listed = await collect(schedules.list());
  await schedules.delete("hourly");

  assert.equal(created.everyMs, 3_600_000);
  assert.deepEqual(created.job?.cmd, ["true"]);
  assert.equal(created.overlap, OverlapPolicy.ALLOW);
  assert.equal(created.upcoming.length, 5);
  assert.ok(created.nextFireTime instanceof Date);
  assert.equal(paused.paused, true);
  assert.equal(resumed.paused, false);
  assert.deepEqual(triggered.cmd, ["true"]);
  assert.equal(triggered.labels["team"], "a");
  assert.equal(read.lastJobId, triggered.id);
  assert.deepEqual(
    itsJobs.map((job) => job.id),
    [triggered.id],
  );
  assert.deepEqual(earlier, []);
  assert.equal(since.length, 2);
  assert.deepEqual(
    listed.map((schedule) => schedule.id),
    ["hourly"],
  );
  await assert.rejects(schedules.get("hourly"), NotFoundError);
  await assert.rejects(schedules.create("bad", { cron: "not a cron", job: { cmd: ["true"] } }), InvalidArgumentError);
});

test("a schedule may submit a template with parameters, read back as values", async (t) => {
  const h = new Harness(t);
  const client = h.client(await h.server());
  await client.templates.create(
    "report",
    { cmd: ["report", "{{ day }}", "{{ n }}"] },
    { parameters: [{ name: "day" }, { name: "n", type: ParameterType.INTEGER }] },
  );

  const created = await client.schedules.create("nightly", {
    cron: "0 3 * * *",
    timeZone: "Europe/Paris",
    template: "report",
    params: { day: "monday", n: 3 },
  });
  const job = await client.schedules.trigger("nightly");

  assert.equal(created.cron, "0 3 * * *");
  assert.equal(created.timeZone, "Europe/Paris");
  assert.equal(created.everyMs, undefined);
  assert.deepEqual(created.template, { name: "report", version: 0, params: { day: "monday", n: 3 } });
  assert.deepEqual(job.cmd, ["report", "monday", "3"]);
});
