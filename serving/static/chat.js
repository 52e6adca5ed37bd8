// Chat screen: answers streamed from /chat/stream (server-sent events), with agent, sources and lineage.
import { ApiError, request } from "./api.js";
import { byId, external, h, short } from "./ui.js";

let conversationId = null;

export function init() {
  byId("composer").addEventListener("submit", send);
  byId("new-conversation").addEventListener("click", () => {
    conversationId = null;
    byId("messages").replaceChildren();
    byId("status").textContent = "";
    byId("message").focus();
  });
  byId("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      byId("composer").requestSubmit();
    }
  });
}

export function show() {}

function addUserMessage(text) {
  byId("messages").append(h("li", { class: "message user" }, text));
}

function addAssistantMessage() {
  const item = byId("assistant-template").content.firstElementChild.cloneNode(true);
  byId("messages").append(item);
  return item;
}

function sourceName(source) {
  const name = source.title || source.doc_id || "source";
  return source.domain ? `${name} (${source.domain})` : name;
}

function showSources(item, sources) {
  const list = item.querySelector(".sources");
  list.replaceChildren(...(sources || []).map((source) => h("li", {}, sourceName(source))));
  item.querySelector(".sources-box").hidden = !sources || sources.length === 0;
  item.querySelector(".sources-box summary").textContent = `Sources (${(sources || []).length})`;
}

function fact(list, term, ...value) {
  list.append(h("dt", {}, term), h("dd", {}, ...value));
}

function showLineage(item, lineage) {
  if (!lineage) return;
  const list = item.querySelector(".lineage");
  list.replaceChildren();
  for (const read of lineage.domains || []) {
    fact(list, `Domain ${read.domain}`, `table ${read.table} v${read.version}`,
      read.index_flow_run_id ? `, index run ${short(read.index_flow_run_id, 8)}` : "");
  }
  if (!(lineage.domains || []).length) fact(list, "Domains", "none read");
  if (lineage.router) {
    const score = lineage.router.score === null || lineage.router.score === undefined ? "" : ` (${lineage.router.score.toFixed(2)})`;
    fact(list, "Route", `${lineage.router.agent} by ${lineage.router.method}${score}`);
  }
  if (lineage.llm) {
    const digest = lineage.llm.sha256 ? `, sha256 ${short(lineage.llm.sha256)}` : "";
    fact(list, "Language model", `${lineage.llm.name} (${lineage.llm.backend}${digest})`);
  }
  if (lineage.embedding) {
    fact(list, "Embedding model", lineage.embedding.name, lineage.embedding.digest ? `, sha256 ${short(lineage.embedding.digest)}` : "");
  }
  const revision = lineage.data_revision || {};
  fact(list, "Data revision", `commit ${short(revision.git_commit)}, knowledge md5 ${short(revision.knowledge_md5)}`);
  fact(list, "Trace", lineage.trace_id || "not traced");
  const box = item.querySelector(".lineage-box");
  box.hidden = false;
  box.dataset.answerId = lineage.answer_id;
  box.addEventListener("toggle", () => box.open && loadLinks(box));
}

// The lineage's ids resolved to Prefect and MLflow UI pages, fetched the first time the box opens.
async function loadLinks(box) {
  if (box.dataset.linked) return;
  box.dataset.linked = "yes";
  const out = box.querySelector(".lineage-links");
  out.textContent = "Loading links…";
  try {
    const found = await request(`/lineage/${box.dataset.answerId}`);
    const links = [];
    for (const [domain, url] of Object.entries(found.links.index_flow_runs || {})) {
      if (url) links.push(external(url, `index run of ${domain}`));
    }
    if (found.links.trace) links.push(external(found.links.trace, "MLflow trace"));
    out.replaceChildren(...(links.length ? links.flatMap((link, i) => (i ? [" · ", link] : [link])) : ["No linked runs."]));
  } catch (error) {
    delete box.dataset.linked;
    out.textContent = `Links unavailable: ${error.message}.`;
  }
}

function showFinal(item, final) {
  item.querySelector(".text").textContent = final.answer;
  item.querySelector(".agent").textContent = final.agent;
  showSources(item, final.sources);
  showLineage(item, final.lineage);
  if (final.lineage && final.conversation_id) offerFeedback(item, final.conversation_id, final.lineage.answer_id);
}

// Thumbs up sends at once; thumbs down first asks (optionally) for the answer wanted.
function offerFeedback(item, conversation, answerId) {
  const box = item.querySelector(".feedback");
  const [up, down] = box.querySelectorAll(".thumb");
  const form = box.querySelector(".correction");
  const status = box.querySelector(".feedback-status");
  box.hidden = false;
  const send = async (rating, correction) => {
    status.textContent = "Sending…";
    try {
      await request(`/chat/${conversation}/feedback`, {
        method: "POST",
        json: { answer_id: answerId, rating, ...(correction ? { correction } : {}) },
      });
      up.setAttribute("aria-pressed", String(rating === 1));
      down.setAttribute("aria-pressed", String(rating === -1));
      form.hidden = true;
      down.setAttribute("aria-expanded", "false");
      status.textContent = "Thanks: your feedback is recorded.";
    } catch (error) {
      status.textContent = error.status === 401 ? "" : `Feedback not recorded: ${error.message}.`;
    }
  };
  up.addEventListener("click", () => send(1));
  down.addEventListener("click", () => {
    form.hidden = !form.hidden;
    down.setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) form.querySelector("textarea").focus();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    send(-1, form.querySelector("textarea").value.trim());
  });
}

// The model is down: say so, and still show which agent took the question and the sources it found.
function showUnavailable(item, detail, found) {
  item.classList.add("failed");
  item.querySelector(".agent").textContent = found.agent || "";
  const notice = item.querySelector(".llm-notice");
  notice.textContent = `No answer: ${detail}.` + ((found.sources || []).length ? " The sources found are listed below." : "");
  notice.hidden = false;
  showSources(item, found.sources);
}

// Parse a text/event-stream body into {event, data} objects as chunks arrive.
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function send(event) {
  event.preventDefault();
  const message = byId("message").value.trim();
  if (!message) return;
  byId("send-button").disabled = true;
  byId("status").textContent = "Thinking…";
  addUserMessage(message);
  const item = addAssistantMessage();
  const text = item.querySelector(".text");
  let finished = false;
  try {
    let response;
    try {
      response = await request("/chat/stream", { method: "POST", json: { message, conversation_id: conversationId }, raw: true });
    } catch (error) {
      if (error instanceof ApiError && error.status === 503 && error.body && "agent" in error.body) {
        showUnavailable(item, error.message, error.body);
        byId("status").textContent = "The language model is unavailable.";
        finished = true;
        return;
      }
      throw error;
    }
    byId("message").value = ""; // sent: the draft is kept only when sending failed
    for await (const { event: kind, data } of serverSentEvents(response)) {
      if (kind === "meta") conversationId = data.conversation_id;
      else if (kind === "token") text.textContent += data.text;
      else if (kind === "final") showFinal(item, data);
      else if (kind === "error") {
        if ("sources" in data) {
          showUnavailable(item, data.detail, data);
          byId("status").textContent = "The language model is unavailable.";
          finished = true;
          return;
        }
        throw new ApiError(500, data.detail);
      }
    }
    byId("status").textContent = "";
    finished = true;
  } catch (error) {
    item.classList.add("failed");
    text.textContent = `${text.textContent}\n${error.message}`.trim();
    byId("status").textContent = error.status === 401 ? "Sign in again, then send your message again." : "The answer failed.";
  } finally {
    byId("send-button").disabled = false;
    if (finished) item.scrollIntoView({ block: "nearest" });
  }
}
