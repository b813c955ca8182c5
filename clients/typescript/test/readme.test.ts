/**
 * The README's "From TypeScript" examples, run as written (with the test
 * server's address): the five lines that submit a job and follow its logs,
 * and the worker, serving a job submitted with the README's command.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { Harness, ROOT, cli } from "./harness.js";

/** The TypeScript blocks of the README's "From TypeScript" section. */
async function readmeExamples(): Promise<string[]> {
  const readme = await readFile(join(ROOT, "README.md"), "utf8");
  const section = readme.split("### From TypeScript")[1]?.split("\n### ")[0] ?? "";
  return [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((match) => match[1] ?? "");
}

/**
 * The example as a module beside the tests (where `@zbrain/client` resolves
 * to this package), its TypeScript compiled away and pointed at `address`.
 */
async function program(example: string, address: string, name: string): Promise<string> {
  const source = example.replaceAll("127.0.0.1:50051", address);
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  });
  const path = fileURLToPath(new URL(`./${name}.mjs`, import.meta.url));
  await writeFile(path, outputText);
  return path;
}

test("the README's five lines submit a job and print its lines as they come", async (t) => {
  const h = new Harness(t);
  const [submitAndFollow] = await readmeExamples();
  assert.ok(submitAndFollow, "the README has no TypeScript example");
  assert.equal(submitAndFollow.trim().split("\n").length, 5);
  const server = await h.server({ args: ["--workers", "1"] });

  const run = h.spawn("README example", process.execPath, [
    await program(submitAndFollow, server.address, "readme-logs"),
  ]);

  assert.equal(await run.exited, 0, run.said());
  assert.deepEqual(run.output, ["line 1", "line 2", "line 3"]);
});

test("the README's worker runs the job the README's command submits, and drains on SIGTERM", async (t) => {
  const h = new Harness(t);
  const [, worker] = await readmeExamples();
  assert.ok(worker, "the README has no TypeScript worker");
  const server = await h.server();
  const run = h.spawn("README worker", process.execPath, [await program(worker, server.address, "readme-worker")]);
  await run.line(/connected to/);

  // The README's command (exit status 0 only if the job succeeded), with --json to read its output.
  const printed = await cli(
    "submit",
    "--server",
    server.address,
    "--json",
    "--org",
    "greetings",
    "--input",
    '{"name": "Ada"}',
    "--wait",
    "--",
    "greet",
  );
  const done = JSON.parse(printed) as { state: string; output: unknown };
  run.signal("SIGTERM");

  assert.equal(done.state, "SUCCEEDED");
  assert.deepEqual(done.output, { greeting: "hello Ada" });
  assert.equal(await run.exited, 0, run.said());
});
