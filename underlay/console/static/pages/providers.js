// Providers & health: the running distribution's providers per API, its models, shields and tool
// groups, and highlights of /metrics (requests, latency, tokens) as small bar charts.

import { api } from "../api.js";
import { errorBox, fmtMs, h, replace } from "../dom.js";

/** Prometheus text → Map(name → [{labels, value}]). Only what the highlights need; comments skipped. */
export function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[3] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: Number(m[4]) });
  }
  return out;
}

function sumBy(samples, ...labels) {
  const totals = new Map();
  for (const s of samples || []) {
    const name = labels.find((l) => l in s.labels);
    const key = name ? s.labels[name] : "–";
    totals.set(key, (totals.get(key) || 0) + s.value);
  }
  return totals;
}

function bars(title, totals, format = (v) => String(Math.round(v))) {
  const entries = [...totals.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8);
  const max = Math.max(...entries.map((e) => e[1]), 1);
  return h("figure", { class: "card chart" }, h("figcaption", {}, title),
    entries.length ? h("ul", { class: "bars" }, entries.map(([k, v]) => {
      const fill = h("span", { class: "fill" });
      fill.style.width = `${(v / max) * 100}%`;
      return h("li", {}, h("span", { class: "k" }, k), h("span", { class: "track" }, fill), h("span", { class: "v" }, format(v)));
    })) : h("p", { class: "muted" }, "No samples yet."));
}

function metricsSection(text) {
  const m = parseMetrics(text);
  const find = (suffix) => [...m.keys()].find((k) => k.endsWith(suffix));
  const requests = m.get(find("requests_total")) || [];
  const durSum = sumBy(m.get(find("request_duration_seconds_sum")), "http_route", "route");
  const durCount = sumBy(m.get(find("request_duration_seconds_count")), "http_route", "route");
  const latency = new Map([...durSum].map(([k, v]) => [k, (v / Math.max(durCount.get(k) || 1, 1)) * 1000]));
  const tokens = sumBy(m.get(find("inference_tokens_total")), "type");
  const tpsSum = sumBy(m.get(find("tokens_per_second_sum")), "model");
  const tpsCount = sumBy(m.get(find("tokens_per_second_count")), "model");
  const tps = new Map([...tpsSum].map(([k, v]) => [k, v / Math.max(tpsCount.get(k) || 1, 1)]));
  return h("div", { class: "charts" },
    bars("Requests by route", sumBy(requests, "http_route", "route")),
    bars("Mean latency by route", latency, fmtMs),
    bars("Tokens by type", tokens),
    bars("Tokens per second by model", tps, (v) => v.toFixed(1)));
}

function table(caption, columns, rows, cls = null) {
  return h("table", { class: cls }, h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
      : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "none"))));
}

/** A provider's own health report as a badge: ok, error (with its message) or not reported. */
export function healthBadge(health) {
  if (!health) return h("span", { class: "badge muted" }, "not reported");
  const status = String(health.status ?? "unknown");
  const good = /^(ok|healthy|up)$/i.test(status);
  const label = good ? "ok" : status.toLowerCase();
  const badge = h("span", { class: `badge ${good ? "ok" : "bad"}` }, label);
  const details = Object.entries(health).filter(([k]) => k !== "status" && k !== "message");
  return h("span", { class: "health" }, badge,
    health.message ? h("span", { class: good ? "muted" : "bad" }, ` ${health.message}`) : null,
    details.length ? h("details", {}, h("summary", {}, "details"), h("pre", { class: "code small" }, JSON.stringify(Object.fromEntries(details), null, 2))) : null);
}

function providerSummary(list) {
  const reported = list.filter((p) => p.health);
  const ok = reported.filter((p) => /^(ok|healthy|up)$/i.test(String(p.health.status))).length;
  const silent = list.length - reported.length;
  return `${ok} of ${reported.length}${silent ? ` (${silent} report no health)` : ""}`;
}

export async function render(root, _params = [], { signal } = {}) {
  const soft = (p) => p.catch((error) => ({ error }));
  const get = (path) => soft(api(path, { signal }));
  const [health, version, providers, models, shields, groups, metrics] = await Promise.all([
    get("/v1/health"), get("/v1/version"), get("/v1/providers"), get("/v1/models"),
    get("/v1/shields"), get("/v1/toolgroups"), get("/metrics"),
  ]);
  const byApi = new Map();
  for (const p of providers.data || []) {
    if (!byApi.has(p.api)) byApi.set(p.api, []);
    byApi.get(p.api).push(p);
  }
  const healthy = health.status === "OK";
  replace(root,
    h("h1", {}, "Providers & health"),
    h("dl", { class: "facts" },
      h("dt", {}, "Health"), h("dd", {}, h("span", { class: `badge ${healthy ? "ok" : "bad"}` }, healthy ? "OK" : health.error?.message || "down")),
      h("dt", {}, "Version"), h("dd", {}, version.version || "–"),
      h("dt", {}, "APIs with providers"), h("dd", {}, String(byApi.size)),
      h("dt", {}, "Providers reporting ok"), h("dd", {}, providerSummary(providers.data || []))),
    providers.error ? errorBox(providers.error) : table("Providers per API", ["API", "Provider", "Type", "Health"],
      [...byApi].flatMap(([apiName, list]) => list.map((p) => [apiName, p.provider_id, h("code", {}, p.provider_type), healthBadge(p.health)])),
      "stack"), // one block per provider at a phone's width
    h("h2", {}, "Metrics"),
    metrics.error ? errorBox(metrics.error) : metricsSection(metrics),
    h("h2", {}, "Resources"),
    models.error ? errorBox(models.error) : table("Models", ["Model", "Type", "Provider"],
      models.data.map((m) => [m.id, m.model_type, m.provider_id])),
    shields.error ? errorBox(shields.error) : table("Shields", ["Shield", "Provider"], shields.data.map((s) => [s.id, s.provider_id])),
    groups.error ? errorBox(groups.error) : table("Tool groups", ["Tool group", "Provider"],
      groups.data.map((g) => [g.identifier || g.id, g.provider_id])));
  return null;
}
