// The API client: bearer token, JSON in and out, errors as ApiError with the API's own reason.

const TOKEN_KEY = "conveyor-token";
// The tab's token lives in sessionStorage only (read at each request): one source of truth for the tab.
export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  user: null,
};
let onExpired = () => {};

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** What to call when a request finds the token expired or revoked (the app returns to sign-in). */
export function whenExpired(handler) {
  onExpired = handler;
}

export function keepToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** The API's reason for a failed response, as one line of text. */
export function reason(status, body, headers) {
  const detail = body && body.detail;
  let text;
  if (typeof detail === "string") text = detail;
  else if (Array.isArray(detail)) {
    text = detail.map((e) => `${(e.loc || []).filter((p) => p !== "body" && p !== "query").join(".")}: ${e.msg}`).join("; ");
  } else text = `the API answered HTTP ${status}`;
  const retry = headers && headers.get("Retry-After");
  if (status === 429 && retry) text += ` (retry in ${retry} s)`;
  return text;
}

export async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return new ApiError(response.status, reason(response.status, body, response.headers), body);
}

/**
 * Call the API. `json` is sent as JSON, `form` (FormData/URLSearchParams) as is; `raw` returns the Response
 * (for streams). Throws ApiError; a 401 on a signed-in request also calls the expiry handler.
 */
export async function request(path, { method = "GET", json, form, raw = false, signal } = {}) {
  const headers = {};
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) body = form;
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "the API cannot be reached; check the connection and retry");
  }
  if (response.status === 401 && token) {
    onExpired(token);
    throw new ApiError(401, "your session has expired; sign in again");
  }
  if (!response.ok) throw await errorOf(response);
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}
