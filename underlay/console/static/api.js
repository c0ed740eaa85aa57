// The console is an ordinary client of the public API: the same /v1 routes, the user's own key as a
// Bearer token. The key lives in sessionStorage, so it ends with the tab and is never in a URL.

const KEY = "underlay.apiKey";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY) || "";
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || null;
  }
}

function headers(extra = {}) {
  const out = { ...extra };
  if (session.key) out.Authorization = `Bearer ${session.key}`;
  return out;
}

async function toError(res) {
  let message = `${res.status} ${res.statusText}`;
  let code = null;
  try {
    const body = await res.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || null;
    }
  } catch {
    // not an envelope: keep the status line
  }
  if (res.status === 401) window.dispatchEvent(new CustomEvent("underlay:unauthorized"));
  return new ApiError(res.status, message, code);
}

function withQuery(path, query) {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

let modelsCache = null;
/** GET /v1/models, shared by the sign-in probe and the first page for a few seconds (one round trip
 * less on first load); a new key or an error starts afresh. The first call is this module's own, as
 * it loads (see the end of this file). */
export function listModels() {
  const now = Date.now();
  if (!modelsCache || modelsCache.key !== session.key || now - modelsCache.at > 5000) {
    const promise = api("/v1/models");
    modelsCache = { key: session.key, at: now, promise };
    promise.catch(() => (modelsCache = null));
  }
  return modelsCache.promise;
}

/** JSON in, JSON (or text) out; a non-2xx answer throws ApiError with the envelope's message. */
export async function api(path, { method = "GET", body, query, signal } = {}) {
  const init = { method, signal, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const res = await fetch(withQuery(path, query), init);
  if (!res.ok) throw await toError(res);
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

/**
 * POST a streaming request and yield its server-sent events as {event, data} (data parsed as JSON).
 * onResponse sees the response before the first event (for its x-trace-id header).
 */
export async function* stream(path, body, { signal, onResponse } = {}) {
  const res = await fetch(path, {
    method: "POST",
    signal,
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(body),
  });
  if (!res.ok) throw await toError(res);
  if (onResponse) onResponse(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = null;
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        else if (line.startsWith("event:")) event = line.slice(6).trim();
      }
      if (!data.length) continue;
      const text = data.join("\n");
      if (text === "[DONE]") return;
      yield { event, data: JSON.parse(text) };
    }
  }
}

/** Upload one file to /v1/files with XHR, whose upload events give real progress (fetch has none). */
export function uploadFile(file, purpose, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files");
    if (session.key) xhr.setRequestHeader("Authorization", `Bearer ${session.key}`);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else {
        const err = xhr.response && xhr.response.error;
        if (xhr.status === 401) window.dispatchEvent(new CustomEvent("underlay:unauthorized"));
        reject(new ApiError(xhr.status, err ? err.message : `upload failed (${xhr.status})`, err && err.code));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "upload failed: the server could not be reached")));
    const form = new FormData();
    form.append("purpose", purpose);
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

// The shell loads this module on its own (async), ahead of app.js and the page modules: the sign-in
// probe and the first page both start with the model list, so asking now takes that round trip off
// the path to a usable page. app.js's probe then reuses this request.
listModels();
