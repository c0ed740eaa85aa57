// Traces: the caller's own traces (the API filters by owner), with filters, and one trace as a span
// waterfall. The waterfall is built off-document in one fragment, so 1,000 spans cost one layout.

import { ApiError, api, listModels } from "../api.js";
import { errorBox, field, fmtMs, h, replace } from "../dom.js";

const SINCE = [["900", "last 15 minutes"], ["3600", "last hour"], ["86400", "last day"], ["604800", "last week"], ["", "any time"]];

function statusBadge(status, http) {
  const cls = status === "error" ? "bad" : status === "ok" ? "ok" : "muted";
  return h("span", { class: `badge ${cls}` }, http ? `${http} ${status}` : status);
}

/** Spans in tree order (parents before children, siblings by start), each with its depth. */
export function treeOrder(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  const roots = [];
  for (const span of spans) {
    if (span.parent_span_id && ids.has(span.parent_span_id)) {
      if (!children.has(span.parent_span_id)) children.set(span.parent_span_id, []);
      children.get(span.parent_span_id).push(span);
    } else roots.push(span);
  }
  const out = [];
  const stack = roots.sort((a, b) => b.start_time_ns - a.start_time_ns).map((s) => [s, 0]);
  while (stack.length) {
    const [span, depth] = stack.pop();
    out.push({ span, depth });
    const kids = (children.get(span.span_id) || []).sort((a, b) => b.start_time_ns - a.start_time_ns);
    for (const kid of kids) stack.push([kid, depth + 1]);
  }
  return out;
}

function tokensOf(spans) {
  let input = 0;
  let output = 0;
  for (const s of spans) {
    const a = s.attributes || {};
    input += Number(a["gen_ai.usage.input_tokens"] || 0);
    output += Number(a["gen_ai.usage.output_tokens"] || 0);
  }
  return { input, output };
}

/** The waterfall of `spans` into `container`; onSelect(span) when a row is chosen. Returns the rows. */
export function renderWaterfall(container, spans, onSelect) {
  const ordered = treeOrder(spans);
  const start = Math.min(...spans.map((s) => s.start_time_ns));
  const end = Math.max(...spans.map((s) => s.end_time_ns || s.start_time_ns));
  const total = Math.max(end - start, 1);
  const list = h("ol", { class: "waterfall", "aria-label": `${spans.length} spans` });
  const fragment = document.createDocumentFragment();
  for (const { span, depth } of ordered) {
    const bar = h("span", { class: `bar ${span.status === "error" ? "err" : ""} ${span.layer || ""}` });
    const left = ((span.start_time_ns - start) / total) * 100;
    const width = Math.max((((span.end_time_ns || span.start_time_ns) - span.start_time_ns) / total) * 100, 0.3);
    bar.style.left = `${left}%`;
    bar.style.width = `${Math.min(width, 100 - left)}%`;
    const label = h("span", { class: "label" }, span.name);
    label.style.paddingLeft = `${Math.min(depth, 12) * 0.9}em`;
    const button = h("button", { type: "button", class: "span-row", "aria-label": `${span.name}, ${fmtMs(span.duration_ms)}` },
      label, h("span", { class: "track" }, bar), h("span", { class: "dur" }, fmtMs(span.duration_ms)));
    button.addEventListener("click", () => onSelect(span, button));
    fragment.append(h("li", {}, button));
  }
  list.append(fragment);
  replace(container, list);
  return list;
}

function spanDetails(box, span) {
  const rows = Object.entries(span.attributes || {}).map(([k, v]) =>
    h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, typeof v === "string" ? v : JSON.stringify(v))));
  replace(box,
    h("h3", {}, span.name),
    h("p", {}, statusBadge(span.status), " ", `${span.kind} · ${span.layer || "–"} · ${fmtMs(span.duration_ms)}`),
    span.status_message ? h("p", { class: "bad" }, span.status_message) : null,
    h("table", { class: "attrs" }, h("caption", {}, "Attributes"), h("tbody", {}, rows)),
    span.events && span.events.length ? h("details", {}, h("summary", {}, `${span.events.length} events`),
      h("pre", { class: "code small" }, JSON.stringify(span.events, null, 2))) : null);
}

/** A trace and its spans. Spans are written in batches a moment after a request ends, so a trace linked
 * from a fresh answer may not be stored yet: a 404 is retried for a few seconds before it is shown. */
async function fetchTrace(root, traceId, signal) {
  const id = encodeURIComponent(traceId);
  for (let attempt = 0; ; attempt++) {
    try {
      return await Promise.all([api(`/v1/telemetry/traces/${id}`, { signal }), api(`/v1/telemetry/traces/${id}/spans`, { signal })]);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404) || attempt >= 10 || signal?.aborted) throw error;
      replace(root, h("p", { class: "muted" }, "Waiting for the trace to be stored…"));
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

async function showTrace(root, traceId, signal) {
  const [trace, spans] = await fetchTrace(root, traceId, signal);
  const tokens = tokensOf(spans.data);
  const details = h("section", { class: "card span-details", "aria-live": "polite", "aria-label": "Span details" },
    h("p", { class: "muted" }, "Choose a span to see its attributes."));
  const chart = h("div", { class: "card" });
  replace(root,
    h("p", {}, h("a", { href: "#/traces" }, "← All traces")),
    h("h1", {}, `Trace ${trace.name}`),
    h("dl", { class: "facts" },
      h("dt", {}, "Trace id"), h("dd", {}, h("code", {}, trace.id)),
      h("dt", {}, "Status"), h("dd", {}, statusBadge(trace.status, trace.http_status)),
      h("dt", {}, "Model"), h("dd", {}, trace.model || "–"),
      h("dt", {}, "Latency"), h("dd", {}, fmtMs(trace.duration_ms)),
      h("dt", {}, "Spans"), h("dd", {}, String(spans.data.length)),
      h("dt", {}, "Tokens"), h("dd", {}, tokens.input || tokens.output ? `${tokens.input} in / ${tokens.output} out` : "–"),
      h("dt", {}, "Request id"), h("dd", {}, trace.request_id || "–")),
    h("div", { class: "split wide" }, chart, details));
  let selected = null;
  renderWaterfall(chart, spans.data, (span, button) => {
    if (selected) selected.removeAttribute("aria-pressed");
    button.setAttribute("aria-pressed", "true");
    selected = button;
    spanDetails(details, span);
  });
}

export async function render(root, params, { signal } = {}) {
  if (params[0]) {
    await showTrace(root, params[0], signal);
    return null;
  }
  const route = h("input", { name: "route", maxlength: 200, placeholder: "/v1/chat/completions", list: "known-routes" });
  const model = h("select", { name: "model" }, h("option", { value: "" }, "any"));
  const status = h("select", { name: "status" }, ["", "ok", "error", "unset"].map((s) => h("option", { value: s }, s || "any")));
  const since = h("select", { name: "since" }, SINCE.map(([v, t]) => h("option", { value: v, selected: v === "3600" }, t)));
  const routes = h("datalist", { id: "known-routes" });
  const results = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "filters row", "aria-label": "Filter traces" },
    field("Route", route), field("Model", model), field("Status", status), field("Time", since), routes,
    h("button", { type: "submit" }, "Apply"));
  // The model filter offers every model the key can see, plus any a listed trace named.
  const known = new Set();
  const offer = (ids) => {
    const fresh = ids.filter((id) => id && !known.has(id));
    if (!fresh.length) return;
    for (const id of fresh) known.add(id);
    const chosen = model.value;
    replace(model, h("option", { value: "" }, "any"), [...known].sort().map((id) => h("option", { value: id }, id)));
    model.value = chosen;
  };
  listModels().then((list) => offer(list.data.map((m) => m.id)), () => null);

  async function load() {
    const query = { limit: 100, route: route.value.trim(), model: model.value, status: status.value };
    if (since.value) query.start_time = Date.now() / 1000 - Number(since.value);
    try {
      const page = await api("/v1/telemetry/traces", { query, signal });
      const seen = new Set(page.data.map((t) => t.route).filter(Boolean));
      replace(routes, [...seen].map((r) => h("option", { value: r })));
      offer(page.data.map((t) => t.model));
      if (!page.data.length) {
        replace(results, h("p", { class: "muted" }, "No traces match."));
        return;
      }
      replace(results, h("table", { class: "stack" },
        h("caption", { class: "visually-hidden" }, "Traces, newest first"),
        h("thead", {}, h("tr", {}, ["Time", "Route", "Model", "Status", "Latency", "Principal"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, page.data.map((t) => h("tr", {},
          h("td", {}, h("a", { href: `#/traces/${encodeURIComponent(t.id)}` }, new Date(t.start_time_ns / 1e6).toLocaleString())),
          h("td", {}, h("code", {}, t.route || t.name)),
          h("td", { class: t.model ? null : "muted" }, t.model || "–"),
          h("td", {}, statusBadge(t.status, t.http_status)),
          h("td", {}, fmtMs(t.duration_ms)),
          h("td", {}, t.principal || "–"))))));
    } catch (error) {
      replace(results, errorBox(error));
    }
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  replace(root, h("h1", {}, "Traces"), form, results);
  await load();
  return null;
}
