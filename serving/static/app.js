// Conveyor web app: sign in, then four screens (dashboard, chat, analytics, training) behind #/ routes.
import { errorOf, keepToken, request, session, whenExpired } from "./api.js";
import * as analytics from "./analytics.js";
import * as chat from "./chat.js";
import * as dashboard from "./dashboard.js";
import * as training from "./training.js";
import { byId } from "./ui.js";

const screens = { dashboard, chat, analytics, training };
const titles = { dashboard: "Dashboard", chat: "Chat", analytics: "Analytics", training: "Training" };
let current = null;
let signedInAs = null; // who the kept screens belong to

function screenName() {
  const match = location.hash.match(/^#\/([a-z]+)/);
  return match && screens[match[1]] ? match[1] : "dashboard";
}

function showSignIn(notice = "") {
  byId("login").hidden = false;
  byId("nav").hidden = true;
  byId("session").hidden = true;
  for (const name of Object.keys(screens)) byId(`screen-${name}`).hidden = true;
  byId("login-notice").textContent = notice;
  byId("login-error").textContent = "";
  current = null;
  document.title = "Sign in · Conveyor";
  byId(byId("username").value ? "password" : "username").focus();
}

function route() {
  if (!session.token || !session.user) return;
  const name = screenName();
  for (const key of Object.keys(screens)) byId(`screen-${key}`).hidden = key !== name;
  for (const link of byId("nav").querySelectorAll("a")) {
    if (link.dataset.screen === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${titles[name]} · Conveyor`;
  const moved = current !== name;
  current = name;
  screens[name].show();
  if (moved) byId(`${name}-title`).focus();
}

async function signIn(event) {
  event.preventDefault();
  const error = byId("login-error");
  error.textContent = "";
  const username = byId("username").value.trim();
  const password = byId("password").value;
  if (!username || !password) {
    error.textContent = "Enter your username and password.";
    return;
  }
  byId("login-button").disabled = true;
  try {
    const response = await fetch("/auth/token", {
      method: "POST",
      body: new URLSearchParams({ username, password }),
    });
    if (!response.ok) {
      error.textContent = response.status === 401 ? "Wrong username or password." : (await errorOf(response)).message;
      return;
    }
    keepToken((await response.json()).access_token);
    byId("password").value = "";
    await enter();
  } catch {
    error.textContent = "The API cannot be reached; check the connection and retry.";
  } finally {
    byId("login-button").disabled = false;
  }
}

async function enter() {
  let user;
  try {
    user = await request("/users/me");
  } catch (error) {
    if (error.status !== 401) showSignIn(`Could not sign in: ${error.message}.`);
    return;
  }
  if (signedInAs && signedInAs !== user.username) {
    location.reload(); // another person: start from clean screens (the new token is kept)
    return;
  }
  session.user = user;
  signedInAs = user.username;
  byId("whoami").textContent = user.username;
  byId("login").hidden = true;
  byId("nav").hidden = false;
  byId("session").hidden = false;
  route();
  for (const screen of Object.values(screens)) screen.resume?.();
}

function expired(failedToken) {
  if (!session.token || session.token !== failedToken) return; // already handled, or signed in again since
  keepToken(null);
  session.user = null;
  showSignIn("Your session has expired. Sign in again to continue; your work on this page is kept.");
}

function signOut() {
  keepToken(null);
  location.hash = "";
  location.reload();
}

whenExpired(expired);
for (const screen of Object.values(screens)) screen.init();
byId("login").addEventListener("submit", signIn);
byId("logout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
if (session.token) enter();
else showSignIn();
