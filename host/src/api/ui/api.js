// The console's only way to the daemon: the same /v1 API as every client.
// The bearer token is kept in sessionStorage and sent as an Authorization header,
// never in a URL. Live tails use fetch() with a streaming body instead of
// EventSource, which cannot send headers.

const TOKEN_KEY = "evhost.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An answer other than 2xx: the API's `{"error":{"code","message"}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Asks the operator for a token (the app shows a dialog): resolves to the token,
// or null when they cancel. `reason` is the daemon's refusal.
let askToken = async () => null;

export function onTokenNeeded(fn) {
  askToken = fn;
}

function headers(extra) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function errorOf(resp) {
  let code = `http_${resp.status}`;
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(resp.status, code, message);
}

// fetch() that answers a 401 by asking for a token and trying again with it; a
// refused token is asked for again, with the daemon's reason shown.
async function authorized(path, init) {
  for (;;) {
    const resp = await fetch(path, { ...init, headers: headers(init.headers) });
    if (resp.status !== 401) return resp;
    const refusal = await errorOf(resp);
    const given = await askToken(refusal.message, token() !== "");
    if (given === null) throw refusal;
    setToken(given);
  }
}

/** One API call; resolves to the parsed JSON answer (null for 204). */
export async function call(method, path, { json, body, contentType } = {}) {
  const init = { method, headers: {} };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = contentType || "application/json";
  } else if (body !== undefined) {
    init.body = body;
    if (contentType) init.headers["Content-Type"] = contentType;
  }
  const resp = await authorized(path, init);
  if (!resp.ok) throw await errorOf(resp);
  const text = await resp.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export const get = (path) => call("GET", path);

/** `/healthz` as it is, also when it answers 503: `{status, body}`. */
export async function health() {
  const resp = await fetch("/healthz");
  const text = await resp.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: resp.status, body };
}

/**
 * A live tail (server-sent events) of `path`. `onEvent(json)` gets each event,
 * `onState(state, detail)` gets "connecting", "live", "ended" or "error".
 * Returns `close()`.
 */
export function tail(path, onEvent, onState) {
  const ctrl = new AbortController();
  (async () => {
    onState("connecting");
    const resp = await authorized(path, {
      headers: { Accept: "text/event-stream" },
      signal: ctrl.signal,
    });
    if (!resp.ok) {
      onState("error", (await errorOf(resp)).message);
      return;
    }
    onState("live");
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
    onState("ended");
  })().catch((e) => {
    if (e.name !== "AbortError") onState("error", e.message);
  });
  return () => ctrl.abort();
}
