// Conveyor web chat: sign in, stream answers from /chat/stream (server-sent events), show agent and sources.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("conveyor-token"), conversationId: null, user: null };

function show(signedIn) {
  $("login").hidden = signedIn;
  $("chat").hidden = !signedIn;
  $("session").hidden = !signedIn;
}

async function signIn(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  const form = new URLSearchParams({ username: $("username").value, password: $("password").value });
  const response = await fetch("/auth/token", { method: "POST", body: form });
  if (!response.ok) {
    $("login-error").textContent = response.status === 401 ? "Wrong username or password." : await errorText(response);
    return;
  }
  state.token = (await response.json()).access_token;
  sessionStorage.setItem("conveyor-token", state.token);
  $("password").value = "";
  await enter();
}

async function enter() {
  const response = await fetch("/users/me", { headers: { Authorization: `Bearer ${state.token}` } });
  if (!response.ok) return signOut();
  state.user = await response.json();
  $("whoami").textContent = state.user.username;
  show(true);
  $("message").focus();
}

function signOut() {
  state.token = null;
  state.conversationId = null;
  sessionStorage.removeItem("conveyor-token");
  $("messages").replaceChildren();
  show(false);
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `HTTP ${response.status}`;
  }
}

function addUserMessage(text) {
  const item = document.createElement("li");
  item.className = "message user";
  item.textContent = text;
  $("messages").append(item);
}

function addAssistantMessage() {
  const item = $("assistant-template").content.firstElementChild.cloneNode(true);
  $("messages").append(item);
  return item;
}

function showFinal(item, final) {
  item.querySelector(".text").textContent = final.answer;
  item.querySelector(".agent").textContent = final.agent;
  const list = item.querySelector(".sources");
  list.replaceChildren(
    ...final.sources.map((source) => {
      const entry = document.createElement("li");
      const name = source.title || source.doc_id || "source";
      entry.textContent = source.domain ? `${name} (${source.domain})` : name;
      return entry;
    }),
  );
  item.querySelector(".sources-box").hidden = final.sources.length === 0;
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
  const message = $("message").value.trim();
  if (!message) return;
  $("message").value = "";
  $("send-button").disabled = true;
  $("status").textContent = "Thinking…";
  addUserMessage(message);
  const item = addAssistantMessage();
  const text = item.querySelector(".text");
  try {
    const response = await fetch("/chat/stream", {
      method: "POST",
      headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ message, conversation_id: state.conversationId }),
    });
    if (response.status === 401) return signOut();
    if (!response.ok) throw new Error(await errorText(response));
    for await (const { event: kind, data } of serverSentEvents(response)) {
      if (kind === "meta") state.conversationId = data.conversation_id;
      else if (kind === "token") text.textContent += data.text;
      else if (kind === "final") showFinal(item, data);
      else if (kind === "error") throw new Error(data.detail);
    }
    $("status").textContent = "";
  } catch (error) {
    item.classList.add("failed");
    text.textContent = `${text.textContent}\n${error.message}`.trim();
    $("status").textContent = "The answer failed.";
  } finally {
    $("send-button").disabled = false;
    item.scrollIntoView({ block: "end" });
  }
}

$("login").addEventListener("submit", signIn);
$("composer").addEventListener("submit", send);
$("logout").addEventListener("click", signOut);
$("new-conversation").addEventListener("click", () => {
  state.conversationId = null;
  $("messages").replaceChildren();
  $("message").focus();
});
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
if (state.token) enter();
else show(false);
