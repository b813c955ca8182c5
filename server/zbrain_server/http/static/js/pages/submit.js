// Submit a job: argv one argument per line (so nothing is ever split by a
// shell's rules), input JSON checked before sending, environment and labels
// as KEY=VALUE lines. The server validates again and names any bad field.

import * as api from "../api.js";
import { append, el, replace } from "../dom.js";

/** "KEY=VALUE" lines as an object; throws naming the first bad line. */
function pairs(text, what) {
  const found = {};
  text.split("\n").map((line) => line.trim()).filter(Boolean).forEach((line, index) => {
    const at = line.indexOf("=");
    if (at <= 0) throw new Error(`${what} line ${index + 1} must read KEY=VALUE`);
    found[line.slice(0, at)] = line.slice(at + 1);
  });
  return found;
}

function field(label, input, hint) {
  return el("div", { class: "field" }, el("label", { for: input.id }, label), input,
    hint ? el("small", { class: "muted" }, hint) : null,
    el("small", { class: "error field-error", dataset: { for: input.name }, hidden: true }));
}

export function render(root, _params, app) {
  const argv = el("textarea", { id: "submit-argv", name: "cmd", rows: 4, required: true, spellcheck: "false",
    placeholder: "sh\n-c\necho hello" });
  const input = el("textarea", { id: "submit-input", name: "input_json", rows: 3, spellcheck: "false", placeholder: "{\"n\": 1}" });
  const env = el("textarea", { id: "submit-env", name: "env", rows: 2, spellcheck: "false", placeholder: "GREETING=hello" });
  const labels = el("textarea", { id: "submit-labels", name: "labels", rows: 2, spellcheck: "false", placeholder: "team=data" });
  const timeout = el("input", { id: "submit-timeout", name: "timeout", type: "number", min: "0.001", step: "any", placeholder: "server default" });
  const retries = el("input", { id: "submit-retries", name: "max_retries", type: "number", min: "0", step: "1", placeholder: "server default" });
  const org = el("input", { id: "submit-org", name: "org_id", value: app.defaultOrg, placeholder: "default" });
  const problem = el("p", { class: "error", id: "submit-error", role: "alert", hidden: true });
  const button = el("button", { type: "submit", id: "submit-button" }, "Submit");
  const form = el("form", { class: "card submit", id: "submit-form", novalidate: true },
    field("Command (one argument per line)", argv, "Run as an argv list, never through a shell."),
    field("Input JSON", input, "Handed to the process on stdin and in $ZBRAIN_INPUT."),
    field("Environment (KEY=VALUE lines)", env),
    field("Labels (KEY=VALUE lines)", labels),
    el("div", { class: "row" },
      field("Timeout (seconds)", timeout),
      field("Retries", retries),
      field("Org", org)),
    problem,
    button);

  function fail(message, violations = []) {
    problem.hidden = false;
    replace(problem, message);
    for (const violation of violations) {
      const name = violation.field.replace(/^job\./, "").split(/[.[]/)[0];
      const slot = form.querySelector(`.field-error[data-for="${CSS.escape(name)}"]`);
      if (slot) {
        slot.hidden = false;
        slot.textContent = violation.description;
      } else {
        problem.append(el("br"), `${violation.field}: ${violation.description}`);
      }
    }
  }

  // One idempotency key per form content: clicking again after an answer
  // that never arrived cannot submit the job twice; editing the form makes
  // it another job.
  let requestId = api.newRequestId();
  form.addEventListener("input", () => {
    requestId = api.newRequestId();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.hidden = true;
    for (const slot of form.querySelectorAll(".field-error")) slot.hidden = true;
    let spec;
    try {
      const cmd = argv.value.split("\n").map((line) => line.replace(/\r$/, "")).filter((line) => line !== "");
      if (!cmd.length) throw new Error("The command needs at least the program to run.");
      if (input.value.trim()) JSON.parse(input.value); // a mistake is named before sending
      spec = { orgId: org.value.trim(), cmd, inputJson: input.value.trim(), env: pairs(env.value, "Environment"),
        labels: pairs(labels.value, "Labels") };
      if (timeout.value) spec.timeout = `${Number(timeout.value)}s`;
      if (retries.value !== "") spec.maxRetries = Number(retries.value);
    } catch (error) {
      fail(error instanceof SyntaxError ? `Input is not JSON: ${error.message}` : error.message);
      return;
    }
    button.disabled = true;
    try {
      const job = await api.submitJob(spec, requestId);
      app.navigate(`#/jobs/${encodeURIComponent(job.id)}`);
    } catch (error) {
      fail(error.message, error.violations || []);
      button.disabled = false;
    }
  });
  append(root, el("h1", {}, "Submit a job"), form);
  argv.focus();
}
