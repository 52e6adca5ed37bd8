// Training screen: start a training flow from a form built from its deployment's parameter schema, then
// follow the run's state and logs until it ends and show the model version it made.
import { request } from "./api.js";
import { schemaForm } from "./schema-form.js";
import { byId, external, formatDuration, formatNumber, h, say, stateBadge, TERMINAL } from "./ui.js";

const TRAINING_FLOWS = ["train-tabular", "train-model", "federated-training"];
const POLL_MS = 2000;
const LEVELS = { 10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL" };
let deployments = [];
let form = null;
let following = null; // the run on screen: {runId, offset, done, timer}

export function init() {
  byId("train-deployment").addEventListener("change", renderForm);
  byId("train-local").addEventListener("change", describePool);
  byId("train-form").addEventListener("submit", start);
}

export function show() {
  if (!deployments.length) load();
}

export function resume() {
  if (following && !following.done) poll(following);
}

async function load() {
  const select = byId("train-deployment");
  try {
    const all = await request("/flows");
    const rank = (d) => (TRAINING_FLOWS.includes(d.flow_name) ? TRAINING_FLOWS.indexOf(d.flow_name) : TRAINING_FLOWS.length);
    deployments = all.sort((a, b) => rank(a) - rank(b) || a.flow_name.localeCompare(b.flow_name) || a.name.localeCompare(b.name));
  } catch (error) {
    if (error.status !== 401) say(byId("train-error"), `Could not load the deployed flows: ${error.message}.`);
    return;
  }
  const training = deployments.filter((d) => TRAINING_FLOWS.includes(d.flow_name));
  byId("train-start").disabled = !deployments.length;
  select.disabled = !deployments.length;
  if (!deployments.length) {
    select.replaceChildren();
    byId("train-fields").replaceChildren(h("p", { class: "empty" },
      "No flow is deployed. Deploy them with `prefect --no-prompt deploy --all` (see docs/operations.md)."));
    return;
  }
  const option = (d) => h("option", { value: String(deployments.indexOf(d)) },
    `${d.flow_name}/${d.name}${d.work_pool ? ` (pool ${d.work_pool})` : ""}`);
  const others = deployments.filter((d) => !training.includes(d));
  select.replaceChildren(...[
    training.length ? h("optgroup", { label: "Training" }, training.map(option)) : null,
    others.length ? h("optgroup", { label: "Other flows" }, others.map(option)) : null,
  ].filter(Boolean));
  renderForm();
  if (!training.length) say(byId("train-error"), "No training flow is deployed (train-tabular, train-model, federated-training); other flows can still be started.");
}

function chosen() {
  return deployments[Number(byId("train-deployment").value)];
}

function renderForm() {
  const deployment = chosen();
  byId("train-description").textContent = deployment.description || "";
  form = schemaForm(byId("train-fields"), deployment.parameters_schema, deployment.parameters || {});
  say(byId("train-error"), "");
  describePool();
}

function describePool() {
  const deployment = chosen();
  if (!deployment) return;
  const pool = deployment.work_pool ? `pool ${deployment.work_pool}` : "this deployment";
  let text = `A worker serves ${pool}: the run goes to it.`;
  if (!deployment.served) {
    text = byId("train-local").checked
      ? `No worker serves ${pool}: the run will execute on the API host.`
      : `No worker serves ${pool}: the run will wait for one (\`make up\` starts a local worker).`;
  }
  byId("train-pool").textContent = text;
}

async function start(event) {
  event.preventDefault();
  const error = byId("train-error");
  say(error, "");
  const deployment = chosen();
  if (!deployment || !form) return;
  const { parameters, invalid } = form.read();
  if (invalid.length) {
    say(error, `Fix the ${invalid.length === 1 ? "field" : `${invalid.length} fields`} marked below.`);
    invalid[0].input.focus();
    return;
  }
  byId("train-start").disabled = true;
  try {
    const started = await request(`/flows/${encodeURIComponent(deployment.flow_name)}/runs`, {
      method: "POST",
      json: { parameters, deployment: deployment.name, local_if_unserved: byId("train-local").checked },
    });
    follow(started, deployment);
  } catch (failure) {
    if (failure.status === 401) return;
    if (failure.status === 422) {
      // Prefect's reason names the field: "Validation failed for field 'a.b'. Failure reason: ..."
      const match = /field '([^']+)'\. Failure reason: (.*)$/s.exec(failure.message);
      if (match) form.markPath(match[1], `${match[2]}.`);
      say(error, `The API refused the parameters: ${failure.message}`);
    } else say(error, `Could not start the run: ${failure.message}.`);
  } finally {
    byId("train-start").disabled = false;
  }
}

function follow(started, deployment) {
  if (following) clearTimeout(following.timer);
  following = { runId: started.run_id, offset: 0, done: false, timer: null };
  byId("train-run").hidden = false;
  byId("train-run-title").textContent = `Run of ${started.flow_name}`;
  byId("train-state").replaceChildren(stateBadge(started.state));
  byId("train-duration").textContent = "–";
  byId("train-link").replaceChildren(external(started.ui_url, "open the run in the Prefect UI"),
    started.executor === "local" ? h("span", { class: "hint" }, " (no worker serves its pool: it runs on the API host)")
      : deployment.served ? "" : h("span", { class: "hint" }, " (waiting for a worker to serve its pool)"));
  say(byId("train-failure"), "");
  byId("train-result").replaceChildren();
  byId("train-logs").textContent = "";
  byId("train-run").scrollIntoView({ block: "nearest" });
  poll(following);
}

function appendLogs(page) {
  const pre = byId("train-logs");
  const atBottom = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
  const lines = page.logs.map((line) => {
    const time = new Date(line.timestamp).toLocaleTimeString();
    return `${time} ${LEVELS[line.level] || line.level} ${line.task_run ? `[${line.task_run}] ` : ""}${line.message}\n`;
  });
  pre.append(lines.join(""));
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

async function readLogs(run) {
  for (;;) {
    const page = await request(`/runs/${run.runId}/logs?offset=${run.offset}&limit=200`);
    if (run !== following) return;
    appendLogs(page);
    run.offset = page.next_offset;
    if (page.logs.length < 200) return;
  }
}

async function poll(run) {
  clearTimeout(run.timer);
  try {
    const info = await request(`/runs/${run.runId}`);
    if (run !== following) return;
    await readLogs(run);
    if (run !== following) return;
    // State, duration and outcome change together: a run shown as ended shows its outcome.
    byId("train-state").replaceChildren(stateBadge(info.state, info.state_name));
    byId("train-duration").textContent = formatDuration(info.duration_s);
    byId("train-result").replaceChildren(info.state === "PAUSED"
      ? h("p", { class: "notice" }, `Paused: ${info.message || "waiting for input"}. Resume it from the Prefect UI.`)
      : "");
    say(byId("train-failure"), "");
    if (TERMINAL.has(info.state)) {
      run.done = true;
      finished(info);
      // The run's last log lines reach the API a moment after its final state.
      run.timer = setTimeout(() => readLogs(run).catch(() => {}), POLL_MS);
      return;
    }
  } catch (error) {
    if (error.status === 401) return; // resume() picks the run up again after sign-in
    say(byId("train-failure"), `Lost contact with the API (${error.message}); still trying.`);
  }
  run.timer = setTimeout(() => poll(run), POLL_MS);
}

function finished(info) {
  if (info.state !== "COMPLETED") {
    say(byId("train-failure"), `The run ended ${info.state_name}: ${info.message || "no reason given"}`);
    return;
  }
  byId("train-result").replaceChildren(resultView(info.result));
}

function resultView(result) {
  const r = result || {};
  const decision = r.decision;
  let model = null;
  if (decision) {
    const against = decision.champion_value === null || decision.champion_value === undefined ? "" : ` (champion v${decision.champion_version}: ${formatNumber(decision.champion_value)})`;
    model = { name: decision.name, version: decision.version, promoted: decision.promoted, reason: decision.reason,
      metric: `${decision.metric} ${formatNumber(decision.challenger_value)}${against}` };
  } else if (r.model_version !== undefined) {
    model = { name: null, version: r.model_version, promoted: r.promoted, metric: `test accuracy ${formatNumber(r.test_accuracy)}` };
  }
  const raw = h("details", {}, h("summary", {}, "Result"), h("pre", { class: "logs" }, JSON.stringify(result, null, 2)));
  if (!model) return h("div", {}, h("p", {}, "The run completed."), raw);
  return h("div", { class: "result" },
    h("p", { class: "result-line" },
      `Model ${model.name ? `${model.name} ` : ""}version ${model.version}: `,
      h("span", { class: `badge ${model.promoted ? "state-completed" : "state-scheduled"}` },
        model.promoted ? "promoted to @champion" : "kept as @challenger")),
    h("p", {}, model.metric),
    model.reason ? h("p", { class: "hint" }, model.reason) : null,
    raw);
}
