// Dashboard: recent flow runs, registered models, knowledge domains and the language model at a glance.
import { request } from "./api.js";
import { byId, external, formatDuration, formatNumber, formatTime, h, say, stateBadge } from "./ui.js";

let loading = null; // the load in flight, if any

export function init() {
  byId("dashboard-refresh").addEventListener("click", load);
}

export function show() {
  load(); // each visit shows the current state
}

function table(label, headers, rows) {
  return h("div", { class: "table-scroll", tabindex: "0", role: "region", "aria-label": label },
    h("table", {},
      h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, rows)));
}

function empty(text) {
  return h("p", { class: "empty" }, text);
}

async function panel(id, path, render) {
  const body = byId(id);
  body.setAttribute("aria-busy", "true");
  try {
    body.replaceChildren(render(await request(path)));
  } catch (error) {
    if (error.status === 401) return;
    body.replaceChildren(h("p", { class: "error" }, `Could not load: ${error.message}.`));
  } finally {
    body.removeAttribute("aria-busy");
  }
}

function runsView(runs) {
  if (!runs.length) return empty("No flow runs yet. Start one on the Training screen or with `make run`.");
  return table("Recent flow runs", ["Flow", "Run", "State", "Started", "Duration"], runs.map((run) => h("tr", {},
    h("td", {}, run.flow_name || "–"),
    h("td", {}, external(run.ui_url, run.name)),
    h("td", {}, stateBadge(run.state, run.state_name)),
    h("td", {}, formatTime(run.start_time || run.created)),
    h("td", {}, formatDuration(run.duration_s)))));
}

function metricsOf(version) {
  const metrics = Object.entries((version && version.metrics) || {});
  const preferred = metrics.filter(([name]) => name.startsWith("test_"));
  return (preferred.length ? preferred : metrics).slice(0, 3).map(([name, value]) => `${name} ${formatNumber(value)}`).join(", ");
}

function modelsView(models) {
  if (!models.length) return empty("No models registered. Train one on the Training screen.");
  return table("Registered models", ["Model", "@champion", "@challenger", "Champion metrics"], models.map((model) => {
    const champion = (model.versions || []).find((v) => String(v.version) === String(model.champion));
    return h("tr", {},
      h("td", {}, external(model.mlflow_url, model.name)),
      h("td", {}, model.champion ? `v${model.champion}` : "none"),
      h("td", {}, model.challenger ? `v${model.challenger}` : "none"),
      h("td", {}, metricsOf(champion) || "–"));
  }));
}

async function loadModels() {
  const body = byId("dashboard-models");
  try {
    body.replaceChildren(modelsView(await request("/models")));
  } catch (error) {
    if (error.status === 401) return;
    // 404/405: this API has no model listing; nothing can be shown as registered.
    const text = error.status === 404 || error.status === 405 ? "No models registered (this API does not list models)." : `Could not load: ${error.message}.`;
    body.replaceChildren(h("p", { class: error.status === 404 || error.status === 405 ? "empty" : "error" }, text));
  }
}

function domainsView(domains) {
  if (!domains.length) return empty("No knowledge domain is indexed yet (`make run` indexes the shipped ones).");
  return table("Knowledge domains", ["Domain", "Documents", "Chunks", "Version", "Last index run"], domains.map((domain) => {
    const run = domain.last_index_run;
    return h("tr", {},
      h("td", {}, domain.domain),
      h("td", {}, formatNumber(domain.documents)),
      h("td", {}, formatNumber(domain.chunks)),
      h("td", {}, `v${domain.version}`),
      h("td", {}, run ? [stateBadge(run.state, run.state ? null : "Unknown"), " ", external(run.ui_url, formatTime(run.end_time))] : "–"));
  }));
}

function llmView(llm) {
  const healthy = llm.health === "ok";
  const byModel = {};
  for (const [role, model] of Object.entries(llm.models)) (byModel[model] ||= []).push(role);
  return h("dl", { class: "facts" },
    h("dt", {}, "Health"),
    h("dd", {}, h("span", { class: `badge ${healthy ? "state-completed" : "state-failed"}` }, healthy ? "Healthy" : "Unavailable"),
      healthy ? "" : h("span", { class: "error" }, ` ${llm.health.replace(/^error: /, "")}`)),
    h("dt", {}, "Backend"),
    h("dd", {}, llm.backend + (llm.base_url ? ` (${llm.base_url})` : "")),
    h("dt", {}, "Models"),
    h("dd", {}, h("ul", { class: "plain" }, Object.entries(byModel).map(([model, roles]) => h("li", {}, h("strong", {}, model), `: ${roles.join(", ")}`)))),
    h("dt", {}, "Waiting generations"),
    h("dd", {}, String(llm.queue_depth)));
}

function load() {
  loading ||= (async () => {
    const status = byId("dashboard-status");
    say(status, "Loading…");
    await Promise.all([
      panel("dashboard-runs", "/runs?limit=15", runsView),
      loadModels(),
      panel("dashboard-domains", "/dashboard/domains", domainsView),
      panel("dashboard-llm", "/dashboard/llm", llmView),
    ]);
    say(status, `Updated ${new Date().toLocaleTimeString()}.`);
  })().finally(() => {
    loading = null;
  });
  return loading;
}
