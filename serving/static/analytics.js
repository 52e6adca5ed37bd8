// Analytics screen: pick or upload a dataset, page through its rows, see its statistics and charts, and ask
// the data agent about it.
import { request } from "./api.js";
import { barChart } from "./charts.js";
import { byId, formatNumber, h, say } from "./ui.js";

const PAGE = 20;
let datasets = null;
let current = null; // {id, offset, total, charts}

export function init() {
  byId("dataset-pick").addEventListener("submit", (event) => event.preventDefault());
  byId("dataset-select").addEventListener("change", (event) => event.target.value && pick(event.target.value));
  byId("upload-form").addEventListener("submit", upload);
  byId("upload-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file && !byId("upload-id").value) {
      byId("upload-id").value = file.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_.-]+/g, "_").replace(/^[^A-Za-z0-9]+/, "");
    }
  });
  byId("rows-prev").addEventListener("click", () => loadRows(current.offset - PAGE));
  byId("rows-next").addEventListener("click", () => loadRows(current.offset + PAGE));
  byId("dist-column").addEventListener("change", drawDistribution);
  byId("group-by").addEventListener("change", () => loadCharts(byId("group-by").value, byId("group-value").value));
  byId("group-value").addEventListener("change", () => loadCharts(byId("group-by").value, byId("group-value").value));
  byId("ask-form").addEventListener("submit", ask);
}

export function show() {
  if (!datasets) loadList();
}

function describe(d) {
  return `${d.id} (${formatNumber(d.rows)} rows, ${d.columns.length} columns${d.source === "upload" ? `, upload v${d.version}` : ""})`;
}

async function loadList(selectId = null) {
  try {
    datasets = await request("/datasets");
  } catch (error) {
    if (error.status !== 401) say(byId("dataset-info"), `Could not list the datasets: ${error.message}.`, "error");
    return;
  }
  const select = byId("dataset-select");
  const keep = selectId || select.value;
  select.replaceChildren(h("option", { value: "" }, "Choose a dataset…"),
    ...datasets.map((d) => h("option", { value: d.id, selected: d.id === keep }, describe(d))));
  if (selectId) pick(selectId);
}

async function upload(event) {
  event.preventDefault();
  const error = byId("upload-error");
  say(error, "");
  say(byId("upload-status"), "");
  const file = byId("upload-file").files[0];
  const id = byId("upload-id").value.trim();
  if (!file || !id) {
    say(error, !file ? "Choose a CSV file to upload." : "Enter a dataset id.");
    byId(!file ? "upload-file" : "upload-id").focus();
    return;
  }
  const form = new FormData();
  form.append("file", file);
  form.append("id", id);
  byId("upload-button").disabled = true;
  say(byId("upload-status"), "Uploading…");
  try {
    const info = await request("/datasets", { method: "POST", form });
    say(byId("upload-status"), `Uploaded ${info.id} version ${info.version}: ${formatNumber(info.rows)} rows, ${info.columns.length} columns.`);
    byId("upload-form").reset();
    await loadList(info.id);
  } catch (failure) {
    say(byId("upload-status"), "");
    if (failure.status !== 401) say(error, `Upload refused (HTTP ${failure.status}): ${failure.message}`);
  } finally {
    byId("upload-button").disabled = false;
  }
}

function pick(id) {
  current = { id, offset: 0, total: 0, charts: null };
  byId("dataset-select").value = id;
  const info = (datasets || []).find((d) => d.id === id);
  byId("dataset-info").textContent = info ? describe(info) : id;
  byId("dataset-view").hidden = false;
  byId("ask-answer").replaceChildren();
  say(byId("ask-status"), "");
  loadRows(0);
  loadSummary();
  loadCharts();
}

function tableOf(headers, rows, className = "") {
  return h("table", { class: className },
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, rows));
}

async function loadRows(offset) {
  const view = current;
  const box = byId("rows-table");
  try {
    const page = await request(`/datasets/${encodeURIComponent(view.id)}?offset=${Math.max(0, offset)}&limit=${PAGE}`);
    if (view !== current) return;
    view.offset = page.offset;
    view.total = page.total;
    box.replaceChildren(tableOf(page.columns, page.rows.map((row) =>
      h("tr", {}, page.columns.map((c) => h("td", {}, row[c] === null ? "–" : formatNumber(row[c])))))));
    const last = Math.min(page.offset + page.rows.length, page.total);
    byId("rows-range").textContent = `Rows ${page.total ? page.offset + 1 : 0}–${last} of ${formatNumber(page.total)}`;
    byId("rows-prev").disabled = page.offset === 0;
    byId("rows-next").disabled = last >= page.total;
  } catch (error) {
    if (error.status !== 401) box.replaceChildren(h("p", { class: "error" }, `Could not load rows: ${error.message}.`));
  }
}

async function loadSummary() {
  const view = current;
  const box = byId("summary-table");
  try {
    const summary = await request(`/datasets/${encodeURIComponent(view.id)}/summary`);
    if (view !== current) return;
    const rows = Object.entries(summary.columns).map(([name, column]) => {
      const s = column.stats;
      const numeric = "mean" in s;
      return h("tr", {},
        h("th", { scope: "row" }, name),
        h("td", {}, column.dtype),
        h("td", {}, formatNumber(column.missing)),
        h("td", {}, numeric ? formatNumber(s.mean) : "–"),
        h("td", {}, numeric ? formatNumber(s.std) : "–"),
        h("td", {}, numeric ? formatNumber(s.min) : "–"),
        h("td", {}, numeric ? formatNumber(s["50%"]) : "–"),
        h("td", {}, numeric ? formatNumber(s.max) : "–"),
        h("td", {}, numeric ? "–" : `${formatNumber(s.unique)} unique, top ${s.top ?? "–"}`));
    });
    box.replaceChildren(tableOf(["Column", "Type", "Missing", "Mean", "Std", "Min", "Median", "Max", "Values"], rows));
  } catch (error) {
    if (error.status !== 401) box.replaceChildren(h("p", { class: "error" }, `Could not load the summary: ${error.message}.`));
  }
}

function options(select, values, chosen) {
  select.replaceChildren(...values.map((v) => h("option", { value: v, selected: v === chosen }, v)));
}

async function loadCharts(groupBy = "", value = "") {
  const view = current;
  say(byId("charts-error"), "");
  const query = new URLSearchParams();
  if (groupBy) query.set("group_by", groupBy);
  if (value) query.set("value", value);
  try {
    const charts = await request(`/datasets/${encodeURIComponent(view.id)}/charts?${query}`);
    if (view !== current) return;
    const first = !view.charts;
    view.charts = charts;
    if (first) options(byId("dist-column"), Object.keys(charts.distributions), charts.numeric[0] || Object.keys(charts.distributions)[0]);
    options(byId("group-by"), charts.group_candidates, charts.totals && charts.totals.group_by);
    options(byId("group-value"), charts.numeric, charts.totals && charts.totals.value);
    await Promise.all([first ? drawDistribution() : null, drawTotals()]);
    if (first) drawCorrelations();
  } catch (error) {
    if (error.status !== 401) say(byId("charts-error"), `Could not draw the charts: ${error.message}.`);
  }
}

function binLabel(edges, i) {
  return `${formatNumber(edges[i], 3)}–${formatNumber(edges[i + 1], 3)}`;
}

async function drawDistribution() {
  const column = byId("dist-column").value;
  const d = current.charts.distributions[column];
  if (!d) return;
  const labels = d.kind === "histogram" ? d.counts.map((_, i) => binLabel(d.edges, i)) : d.labels;
  await barChart(byId("dist-chart"), {
    labels,
    series: [{ name: "rows", values: d.counts }],
    xTitle: column,
    yTitle: "rows",
    label: `${d.kind === "histogram" ? "Histogram" : "Counts"} of ${column}: ${labels.length} ${d.kind === "histogram" ? "bins" : "values"}, ${d.missing} missing.`,
  });
}

async function drawTotals() {
  const canvas = byId("group-chart");
  const t = current.charts.totals;
  if (!t) {
    canvas.setAttribute("aria-label", "No column has few enough distinct values to group by.");
    return;
  }
  const series = t.value ? [{ name: `sum of ${t.value}`, values: t.sum }, { name: "rows", values: t.count }] : [{ name: "rows", values: t.count }];
  await barChart(canvas, {
    labels: t.groups,
    series,
    xTitle: t.group_by,
    label: `Totals by ${t.group_by}: ${t.groups.map((g, i) => `${g} ${t.value ? formatNumber(t.sum[i]) : t.count[i]}`).join(", ")}.`,
  });
}

// The correlation matrix as a table whose cells are shaded by the coefficient (the number stays readable).
function drawCorrelations() {
  const { columns, matrix } = current.charts.correlations;
  const box = byId("corr-table");
  if (columns.length < 2) {
    box.replaceChildren(h("p", { class: "empty" }, "Fewer than two numeric columns: no correlations."));
    return;
  }
  const cell = (value) => {
    if (value === null) return h("td", {}, "–");
    const alpha = Math.min(1, Math.abs(value)) * 0.6;
    const color = value >= 0 ? `rgba(40, 87, 197, ${alpha})` : `rgba(194, 65, 12, ${alpha})`;
    return h("td", { class: "corr", style: `background:${color}` }, value.toFixed(2));
  };
  box.replaceChildren(tableOf(["", ...columns], columns.map((name, i) =>
    h("tr", {}, h("th", { scope: "row" }, name), matrix[i].map(cell))), "corr-matrix"));
}

async function ask(event) {
  event.preventDefault();
  const question = byId("ask-question").value.trim();
  if (!question || !current) return;
  const out = byId("ask-answer");
  byId("ask-button").disabled = true;
  say(byId("ask-status"), "The data agent is working…");
  out.replaceChildren();
  try {
    const reply = await request("/chat", { method: "POST", json: { message: `${question} (dataset: ${current.id}.csv)` } });
    out.replaceChildren(h("p", { class: "meta" }, h("span", { class: "agent" }, reply.agent)), h("div", { class: "text" }, reply.answer));
    say(byId("ask-status"), "");
  } catch (error) {
    if (error.status === 401) return;
    say(byId("ask-status"), "");
    const found = error.body && error.body.agent ? ` (agent ${error.body.agent})` : "";
    out.replaceChildren(h("p", { class: "error" }, `No answer${found}: ${error.message}.`));
  } finally {
    byId("ask-button").disabled = false;
  }
}
