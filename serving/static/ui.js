// Small DOM and formatting helpers shared by the screens.

/** An element: h("a", {href, class: "x", onclick}, "text", child...). `null`/`false` children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "value" || (key in node && typeof value !== "string")) node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export const byId = (id) => document.getElementById(id);

/** A link that opens outside the app (Prefect UI, MLflow UI). */
export function external(href, text) {
  if (!href) return h("span", {}, text);
  return h("a", { href, target: "_blank", rel: "noopener" }, text, h("span", { class: "visually-hidden" }, " (opens in a new tab)"));
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function formatTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  const sameYear = date.getFullYear() === new Date().getFullYear();
  return date.toLocaleString(undefined, { year: sameYear ? undefined : "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function formatNumber(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString();
  return Number(value.toPrecision(digits)).toLocaleString(undefined, { maximumFractionDigits: 6 });
}

export const TERMINAL = new Set(["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]);

/** A run state as text in a coloured badge (the colour repeats the text, never replaces it). */
export function stateBadge(state, name) {
  const kind = (state || "unknown").toLowerCase();
  return h("span", { class: `badge state-${kind}` }, name || kind.charAt(0).toUpperCase() + kind.slice(1));
}

/** Put a message in a status or error element (empty text clears it). */
export function say(element, text, kind = "") {
  element.textContent = text;
  element.dataset.kind = kind;
}

export function short(text, size = 12) {
  return text ? String(text).slice(0, size) : "–";
}
