/**
 * Tokens and TLS: a server with auth on answers only calls that carry a good
 * token, a worker whose token may not work stops with the server's refusal,
 * and a TLS server is reached by a client that trusts its CA.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import {
  JobState,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  Worker,
  ZBrainClient,
} from "@zbrain/client";
import { scripted } from "./fixtures/handler.js";
import { Harness, token } from "./harness.js";

test("with auth on, a call needs a valid token, and one with a token works", async (t) => {
  const h = new Harness(t);
  const dataDir = await h.tempDir();
  const admin = await token(dataDir, "ops", "admin");
  const server = await h.server({ dataDir });

  await assert.rejects(h.client(server).submit(["true"]), UnauthenticatedError);
  await assert.rejects(h.client(server, { token: "zbt_000000000000_forged" }).submit(["true"]), UnauthenticatedError);
  const job = await h.client(server, { token: admin }).submit(["true"], { org: "ops" });

  assert.equal(job.state, JobState.PENDING);
  assert.equal(job.orgId, "ops");
});

test("a worker whose token may not run workers stops with PermissionDeniedError", async (t) => {
  const h = new Harness(t);
  const dataDir = await h.tempDir();
  const clientToken = await token(dataDir, "team-a", "client");
  const server = await h.server({ dataDir });
  const worker = new Worker({
    client: h.client(server, { token: clientToken }),
    handler: scripted,
    orgs: ["team-a"],
    signals: [],
    logger: { info: () => undefined, warn: () => undefined },
  });

  await assert.rejects(worker.run(), PermissionDeniedError);
});

test("a worker with a worker token runs its organisation's jobs", async (t) => {
  const h = new Harness(t);
  const dataDir = await h.tempDir();
  const workerToken = await token(dataDir, "team-a", "worker");
  const clientToken = await token(dataDir, "team-a", "client");
  const server = await h.server({ dataDir });
  h.runWorker({ client: h.client(server, { token: workerToken }), handler: scripted, orgs: ["team-a"] });
  const client = h.client(server, { token: clientToken });

  const job = await client.submit(["x"], { input: { echo: "authorised" } });
  const done = await client.wait(job.id, { timeoutMs: 30_000 });

  assert.equal(done.state, JobState.SUCCEEDED);
  assert.equal((done.output as { echo: string }).echo, "authorised");
});

const run = promisify(execFile);

/** A throwaway CA and a certificate it signs for 127.0.0.1, as PEM files in `dir`. */
async function certificates(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const file = (name: string) => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await run("openssl", [
    "req", "-x509", ...ec, "-days", "1", "-subj", "/CN=zbrain test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
    "-keyout", file("ca.key"), "-out", file("ca.pem"),
  ]); // prettier-ignore
  await run("openssl", [
    "req",
    ...ec,
    "-subj",
    "/CN=127.0.0.1",
    "-keyout",
    file("server.key"),
    "-out",
    file("server.csr"),
  ]);
  await writeFile(file("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  await run("openssl", [
    "x509", "-req", "-in", file("server.csr"), "-CA", file("ca.pem"), "-CAkey", file("ca.key"),
    "-CAcreateserial", "-days", "1", "-extfile", file("server.ext"), "-out", file("server.pem"),
  ]); // prettier-ignore
  return { ca: file("ca.pem"), cert: file("server.pem"), key: file("server.key") };
}

test("over TLS, a client that trusts the server's CA connects; the others are told what to check", async (t) => {
  const h = new Harness(t);
  const pem = await certificates(await h.tempDir());
  const server = await h.server({ args: ["--tls-cert", pem.cert, "--tls-key", pem.key] });

  const trusting = new ZBrainClient({ server: server.address, tls: { ca: await readFile(pem.ca) } });
  const systemCas = new ZBrainClient({ server: server.address, tls: true, timeoutMs: 5_000 });
  const plaintext = new ZBrainClient({ server: server.address, tls: false, timeoutMs: 5_000 });
  t.after(() => [trusting, systemCas, plaintext].forEach((client) => client.close()));

  assert.equal((await trusting.submit(["true"])).state, JobState.PENDING);
  await assert.rejects(systemCas.submit(["true"]), (error: unknown) => {
    assert.ok(error instanceof UnavailableError, String(error));
    assert.match(error.message, /TLS with the ZBrain server at 127\.0\.0\.1:\d+ failed .*tls\.ca/);
    return true;
  });
  await assert.rejects(plaintext.submit(["true"]), (error: unknown) => {
    assert.ok(error instanceof UnavailableError, String(error));
    assert.match(error.message, /closed the connection .*if it serves TLS/);
    return true;
  });
});
