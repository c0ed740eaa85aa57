// Evaluations: your evals (/v1/evals), an eval's runs with their status, counts and pass rate (and a bar
// chart of the pass rate per run), and a run's output items row by row, paged with `after`. Unfinished
// runs are re-read every few seconds. The index also lists the benchmark eval jobs of /v1alpha/eval.

import { ApiError, api } from "../api.js";
import { announce, errorBox, field, fmtTime, h, replace } from "../dom.js";
import { fitted, rateBars } from "../charts.js";

const LIVE = new Set(["queued", "in_progress"]);
const POLL_MS = 2000;
const ITEMS_PAGE = 20;
const MAX_BENCHMARKS = 30;
const enc = encodeURIComponent;

/** passed / total (errored rows count as not passed); null without rows. */
export function passRate(counts) {
  return counts && counts.total ? counts.passed / counts.total : null;
}

const percent = (rate) => (rate === null ? "–" : `${Math.round(rate * 100)}%`);

function badge(status) {
  const cls = { completed: "ok", pass: "ok", failed: "bad", fail: "bad", error: "warn", canceled: "muted", cancelled: "muted" }[status] || "warn";
  return h("span", { class: `badge ${cls}` }, status.replace("_", " "));
}

function counts(c) {
  return `${c.passed} passed · ${c.failed} failed · ${c.errored} errored · ${c.total} rows`;
}

/** Re-run `step` every `ms` while `alive()` and until it returns false; returns the stop function. */
function every(ms, step, alive) {
  let timer = 0;
  const tick = async () => {
    let again = false;
    try {
      again = await step();
    } catch {
      again = alive(); // a failed refresh (network blip) tries again; an aborted one ends with the page
    }
    if (again && alive()) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => clearTimeout(timer);
}

function evalList(evals, current) {
  return h("ul", { class: "list", "aria-label": "Evals" },
    evals.map((e) => h("li", {},
      h("a", { href: `#/evals/${enc(e.id)}`, "aria-current": e.id === current ? "page" : null },
        h("strong", {}, e.name || "(unnamed)"), h("br"),
        h("small", { class: "muted" }, `${e.id} · ${e.testing_criteria.length} criteria · ${fmtTime(e.created_at)}`)))));
}

// --- one eval: its runs --------------------------------------------------------------------------

function runsTable(evalId, runs) {
  return h("table", { class: "stack" },
    h("caption", { class: "visually-hidden" }, "Runs, newest first"),
    h("thead", {}, h("tr", {}, ["Status", "Run", "Results", "Pass rate", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, runs.map((r) => h("tr", {},
      h("td", {}, badge(r.status)),
      h("td", {}, h("a", { href: `#/evals/${enc(evalId)}/${enc(r.id)}` }, r.name || r.id), r.model ? h("small", { class: "muted" }, ` · ${r.model}`) : null),
      h("td", {}, counts(r.result_counts)),
      h("td", { class: "rate-cell" }, percent(passRate(r.result_counts))),
      h("td", {}, fmtTime(r.created_at))))));
}

async function showEval(main, evalId, signal, alive) {
  const ev = await api(`/v1/evals/${enc(evalId)}`, { signal });
  const plotBox = h("div", { class: "plot-box" });
  const chart = h("figure", { class: "card chart" }, h("figcaption", {}, "Pass rate per run"), plotBox);
  const runsBox = h("div");
  replace(main,
    h("h2", {}, ev.name || ev.id),
    h("p", { class: "muted" }, `${ev.id} · ${ev.data_source_config.type} rows · created ${fmtTime(ev.created_at)}`),
    h("h3", {}, "Testing criteria"),
    h("ul", { class: "tags", "aria-label": "Testing criteria" }, ev.testing_criteria.map((c) => h("li", {}, `${c.name} (${c.type})`))),
    chart,
    h("h3", {}, "Runs"),
    runsBox);

  async function load() {
    const page = await api(`/v1/evals/${enc(evalId)}/runs`, { query: { limit: 100, order: "desc" }, signal });
    const runs = page.data;
    if (!runs.length) {
      fitted(plotBox, (box) => box.append(h("p", { class: "muted" }, "No runs yet.")));
      replace(runsBox, h("p", { class: "muted" }, "No runs yet: create one with POST /v1/evals/{id}/runs."));
      return false;
    }
    const oldestFirst = [...runs].reverse();
    const rates = oldestFirst.map((r) => ({ label: r.name || r.id, value: passRate(r.result_counts) }));
    const summary = oldestFirst.map((r, i) => `${r.name || r.id} ${percent(rates[i].value)}`).join(", ");
    fitted(plotBox, (box) => rateBars(box, rates, { label: `Pass rate per run, oldest first: ${summary}` }));
    replace(runsBox, runsTable(evalId, runs), page.has_more ? h("p", { class: "muted" }, "Showing the latest 100 runs.") : null);
    return runs.some((r) => LIVE.has(r.status));
  }
  if (await load()) return every(POLL_MS, load, alive);
  return null;
}

// --- one run: summary and output items ------------------------------------------------------------

/** JSON on one line when it is short, indented otherwise. */
function json(value) {
  const line = JSON.stringify(value);
  return line.length <= 100 ? line : JSON.stringify(value, null, 2);
}

function itemCard(item) {
  const sample = item.sample || {};
  const messages = (list) => list.map((m) => h("div", { class: "message" }, h("span", { class: "role" }, m.role), h("pre", { class: "code small" }, m.content)));
  const output = sample.output && sample.output.length ? messages(sample.output) : [h("p", { class: "muted" }, "No output (the run did not sample).")];
  const judged = item.results.some((r) => r.sample);
  return h("li", { class: "card item", tabindex: -1, "aria-label": `Row ${item.datasource_item_id}: ${item.status}` },
    h("div", { class: "item-head" },
      h("strong", {}, `Row ${item.datasource_item_id}`), " ", badge(item.status),
      h("ul", { class: "graders", "aria-label": "Grader results" }, item.results.map((r) => h("li", {},
        h("span", { class: `badge ${r.passed ? "ok" : "bad"}` }, `${r.name}: ${r.passed ? "pass" : "fail"}`), " ",
        h("span", { class: "score", title: `${r.type} score` }, Number(r.score).toFixed(3)))))),
    h("div", { class: "item-body" },
      h("section", { "aria-label": "Input" }, h("h4", {}, "Input"),
        h("pre", { class: "code small" }, json(item.datasource_item)),
        sample.input && sample.input.length ? messages(sample.input) : null),
      h("section", { "aria-label": "Output" }, h("h4", {}, "Output"), output,
        sample.error && sample.error.message ? h("p", { class: "bad" }, `${sample.error.code}: ${sample.error.message}`) : null)),
    judged ? h("details", {}, h("summary", {}, "Grader details"), h("pre", { class: "code small" }, JSON.stringify(item.results, null, 2))) : null);
}

function runFacts(run) {
  const p = run.progress || {};
  const progress = p.rows_total ? h("progress", { max: p.rows_total, value: p.rows_done, "aria-label": "Rows graded" }) : null;
  const facts = [
    ["Status", badge(run.status)],
    ["Model", run.model || "–"],
    ["Data source", run.data_source.type],
    ["Rows", [progress, ` ${p.rows_done || 0} of ${p.rows_total || run.result_counts.total} graded`, LIVE.has(run.status) && p.rows_per_second ? ` · ${p.rows_per_second.toFixed(1)} rows/s` : ""]],
    ["Results", counts(run.result_counts)],
    ["Pass rate", h("strong", { class: "pass-rate" }, percent(passRate(run.result_counts)))],
    ["Created", fmtTime(run.created_at)],
  ];
  if (run.error && run.error.message) facts.push(["Error", h("span", { class: "bad" }, `${run.error.code}: ${run.error.message}`)]);
  return h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function criteriaTable(run) {
  const rows = run.per_testing_criteria_results || [];
  const usage = run.per_model_usage || [];
  return [
    rows.length ? h("table", {}, h("caption", {}, "Per testing criterion"),
      h("thead", {}, h("tr", {}, ["Criterion", "Passed", "Failed", "Pass rate"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r.testing_criteria), h("td", {}, String(r.passed)), h("td", {}, String(r.failed)),
        h("td", {}, percent(r.passed + r.failed ? r.passed / (r.passed + r.failed) : null)))))) : null,
    usage.length ? h("table", {}, h("caption", {}, "Model usage"),
      h("thead", {}, h("tr", {}, ["Model", "Calls", "Prompt tokens", "Completion tokens"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, usage.map((u) => h("tr", {}, h("td", {}, u.model_name), h("td", {}, String(u.invocation_count)),
        h("td", {}, String(u.prompt_tokens)), h("td", {}, String(u.completion_tokens)))))) : null,
  ];
}

async function showRun(main, evalId, runId, signal, alive) {
  const [ev, first] = await Promise.all([api(`/v1/evals/${enc(evalId)}`, { signal }), api(`/v1/evals/${enc(evalId)}/runs/${enc(runId)}`, { signal })]);
  let run = first;
  const summary = h("div");
  const list = h("ol", { class: "items", "aria-label": "Output items" });
  const more = h("div");
  const status = h("select", { name: "status" }, [["", "all rows"], ["pass", "passed"], ["fail", "failed"], ["error", "errored"]].map(([v, t]) => h("option", { value: v }, t)));
  const filter = h("form", { class: "row filters narrow", "aria-label": "Filter rows" }, field("Rows", status));
  let after = null;
  let paged = false; // once more pages are shown, a refresh leaves the list alone

  function drawSummary() {
    replace(summary, runFacts(run), criteriaTable(run));
  }
  async function loadItems(reset) {
    const query = { limit: ITEMS_PAGE, after: reset ? null : after, status: status.value };
    const page = await api(`/v1/evals/${enc(evalId)}/runs/${enc(runId)}/output_items`, { query, signal });
    const cards = page.data.map(itemCard);
    if (reset) replace(list, cards);
    else list.append(...cards);
    after = page.data.length ? page.data[page.data.length - 1].id : after;
    if (!list.children.length) replace(list, h("li", { class: "muted" }, LIVE.has(run.status) ? "No rows graded yet." : "No rows."));
    replace(more, page.has_more ? h("button", { type: "button", class: "secondary", onclick: loadMore }, `Load ${ITEMS_PAGE} more rows`) : null);
    return cards;
  }
  async function loadMore() {
    paged = true;
    try {
      const cards = await loadItems(false);
      if (cards.length) cards[0].focus();
      announce(`Loaded ${cards.length} more rows.`);
    } catch (error) {
      more.append(errorBox(error));
    }
  }
  status.addEventListener("change", () => {
    paged = false;
    loadItems(true).catch((error) => replace(list, h("li", {}, errorBox(error))));
  });
  filter.addEventListener("submit", (e) => e.preventDefault());

  replace(main,
    h("p", {}, h("a", { href: `#/evals/${enc(evalId)}` }, `← ${ev.name || ev.id}`)),
    h("h2", {}, `Run ${run.name || run.id}`),
    h("p", { class: "muted" }, run.id),
    summary,
    h("h3", {}, "Output items"),
    filter, list, more);
  drawSummary();
  await loadItems(true);
  if (!LIVE.has(run.status)) return null;
  return every(POLL_MS, async () => {
    const before = run.status;
    run = await api(`/v1/evals/${enc(evalId)}/runs/${enc(runId)}`, { signal });
    drawSummary();
    if (!paged) await loadItems(true);
    if (before !== run.status && !LIVE.has(run.status)) announce(`Run ${run.status}.`);
    return LIVE.has(run.status);
  }, alive);
}

// --- /v1alpha/eval: benchmark eval jobs -----------------------------------------------------------

async function benchmarkJobs(box, signal) {
  let benchmarks;
  try {
    benchmarks = (await api("/v1alpha/eval/benchmarks", { signal })).data;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      replace(box, h("p", { class: "muted" }, "The benchmark eval API (/v1alpha/eval) is not enabled on this server."));
      return;
    }
    throw error;
  }
  const shown = benchmarks.slice(0, MAX_BENCHMARKS);
  const pages = await Promise.all(shown.map((b) =>
    api(`/v1alpha/eval/benchmarks/${enc(b.identifier)}/jobs`, { query: { limit: 20 }, signal }).then((p) => p.data, () => [])));
  const jobs = pages.flat().sort((a, b) => b.created_at - a.created_at);
  if (!jobs.length) {
    replace(box, h("p", { class: "muted" }, `No eval jobs yet on your ${benchmarks.length} benchmarks.`));
    return;
  }
  replace(box, h("table", { class: "stack" },
    h("caption", { class: "visually-hidden" }, "Benchmark eval jobs, newest first"),
    h("thead", {}, h("tr", {}, ["Status", "Benchmark", "Candidate", "Results", "Pass rate", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, jobs.map((j) => {
      const c = j.result_counts;
      const total = c.passed + c.failed + c.errored;
      return h("tr", {},
        h("td", {}, badge(j.status)),
        h("td", {}, h("strong", {}, j.benchmark_id), h("br"), h("small", { class: "muted" }, j.job_id)),
        h("td", {}, j.candidate),
        h("td", {}, `${c.passed} passed · ${c.failed} failed · ${c.errored} errored · ${j.progress.rows_done}/${j.progress.rows_total} rows`,
          j.error ? h("span", { class: "bad" }, ` · ${j.error.message}`) : null),
        h("td", {}, percent(total ? c.passed / total : null)),
        h("td", {}, fmtTime(j.created_at)));
    }))),
  benchmarks.length > MAX_BENCHMARKS ? h("p", { class: "muted" }, `Jobs of the first ${MAX_BENCHMARKS} benchmarks.`) : null);
}

// --- the page ---------------------------------------------------------------------------------------

export async function render(root, params) {
  const controller = new AbortController();
  const signal = controller.signal;
  let stop = null;
  const [evalId, runId] = params;
  const main = h("section", { class: "detail", "aria-label": evalId ? "Eval" : "Benchmark eval jobs" });
  const alive = () => !signal.aborted && main.isConnected;
  const cleanup = () => {
    controller.abort();
    if (stop) stop();
  };

  const evals = await api("/v1/evals", { query: { limit: 100, order: "desc" }, signal });
  const side = h("aside", { class: "card" }, h("h2", {}, "Evals"),
    evals.data.length ? evalList(evals.data, evalId) : h("p", { class: "muted" }, "No evals yet: create one with POST /v1/evals."),
    evals.has_more ? h("p", { class: "muted" }, "Showing the latest 100.") : null);
  replace(root, h("h1", {}, "Evaluations"), h("div", { class: evalId ? "split picked" : "split" }, side, main));
  try {
    if (runId) stop = await showRun(main, evalId, runId, signal, alive);
    else if (evalId) stop = await showEval(main, evalId, signal, alive);
    else {
      const box = h("div", { "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
      replace(main, h("h2", {}, "Benchmark eval jobs"),
        h("p", { class: "muted" }, "Pick an eval for its runs. Below, the jobs of the benchmark eval API (/v1alpha/eval)."), box);
      await benchmarkJobs(box, signal).catch((error) => replace(box, errorBox(error)));
    }
  } catch (error) {
    if (!signal.aborted) replace(main, errorBox(error));
  }
  return cleanup;
}
