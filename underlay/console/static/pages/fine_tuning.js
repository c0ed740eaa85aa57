// Fine-tuning: your jobs (/v1/fine_tuning/jobs) and one job's status, hyperparameters, trained tokens,
// tuned model, checkpoints, events and loss curve. The curve is drawn from the job's `metrics` events
// (one per training step: train_loss, valid_loss at an epoch's end); checkpoints are marked on it. While
// the job is unfinished the page re-reads it every few seconds, and stops when the page is left.

import { api } from "../api.js";
import { announce, errorBox, fmtTime, h, replace } from "../dom.js";
import { fitted, lineChart } from "../charts.js";

const LIVE = new Set(["validating_files", "queued", "running"]);
const POLL_MS = 3000;
const EVENT_PAGE = 1000;
const MAX_EVENT_PAGES = 20;
const SHOWN_EVENTS = 200;
const enc = encodeURIComponent;

function badge(status) {
  const cls = { succeeded: "ok", failed: "bad", cancelled: "muted", paused: "muted" }[status] || "warn";
  return h("span", { class: `badge ${cls}` }, status.replace("_", " "));
}

function jobTitle(job) {
  return job.fine_tuned_model || `${job.model}${job.suffix ? ` · ${job.suffix}` : ""}`;
}

/** The run's hyperparameters: the method's own (the newer place), else the job's top-level ones. */
function hyperparameters(job) {
  const method = job.method || {};
  return (method[method.type] && method[method.type].hyperparameters) || job.hyperparameters || {};
}

/** Metrics events oldest first by step (one per step; a step reported twice, after a resume, keeps the latest). */
export function metricSteps(events) {
  const bySteps = new Map();
  for (const e of [...events].reverse()) {
    if (e.type === "metrics" && e.data && Number.isFinite(Number(e.data.step))) bySteps.set(Number(e.data.step), e.data);
  }
  return [...bySteps.entries()].sort((a, b) => a[0] - b[0]).map(([, data]) => data);
}

function every(ms, step, alive) {
  let timer = 0;
  const tick = async () => {
    let again = false;
    try {
      again = await step();
    } catch {
      again = alive(); // a failed refresh tries again; an aborted one ends with the page
    }
    if (again && alive()) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => clearTimeout(timer);
}

function fmtNumber(value) {
  if (value === null || value === undefined) return "–";
  const n = Number(value);
  return Number.isInteger(n) ? n.toLocaleString() : Number(n.toPrecision(4)).toString();
}

// --- the job list ------------------------------------------------------------------------------------

function jobItem(job, current, labels) {
  const small = h("small", { class: "muted" }, `${job.id} · ${job.status.replace("_", " ")} · ${fmtTime(job.created_at)}`);
  labels.set(job.id, small);
  return h("li", {}, h("a", { href: `#/fine-tuning/${enc(job.id)}`, "aria-current": job.id === current ? "page" : null },
    h("strong", {}, jobTitle(job)), h("br"), small));
}

async function jobList(side, current, labels, signal) {
  const list = h("ul", { class: "list", "aria-label": "Fine-tuning jobs" });
  const more = h("div");
  async function load(after) {
    const page = await api("/v1/fine_tuning/jobs", { query: { limit: 20, after }, signal });
    list.append(...page.data.map((job) => jobItem(job, current, labels)));
    const last = page.data.length ? page.data[page.data.length - 1].id : null;
    replace(more, page.has_more && last ? h("button", { type: "button", class: "secondary small", onclick: async () => {
      try {
        const before = list.children.length;
        await load(last);
        list.children[before]?.querySelector("a")?.focus();
      } catch (error) {
        more.append(errorBox(error));
      }
    } }, "Load more jobs") : null);
    return page.data.length;
  }
  const count = await load(null);
  replace(side, h("h2", {}, "Jobs"), count ? [list, more] : h("p", { class: "muted" },
    "No fine-tuning jobs yet: upload a JSONL file with purpose fine-tune and POST /v1/fine_tuning/jobs."));
}

// --- one job -----------------------------------------------------------------------------------------

function jobFacts(job, steps) {
  const hp = hyperparameters(job);
  const last = steps[steps.length - 1];
  const progress = last && last.total_steps
    ? [h("progress", { max: last.total_steps, value: last.step, "aria-label": "Training steps done" }), ` step ${last.step} of ${last.total_steps}`]
    : "–";
  const facts = [
    ["Status", badge(job.status)],
    ["Base model", job.model],
    ["Fine-tuned model", job.fine_tuned_model ? h("code", {}, job.fine_tuned_model) : "–"],
    ["Method", (job.method && job.method.type) || "supervised"],
    ["Epochs", fmtNumber(hp.n_epochs)],
    ["Batch size", fmtNumber(hp.batch_size)],
    ["Learning rate multiplier", fmtNumber(hp.learning_rate_multiplier)],
  ];
  if (hp.beta !== undefined && hp.beta !== null) facts.push(["Beta", fmtNumber(hp.beta)]);
  facts.push(
    ["Progress", progress],
    ["Trained tokens", fmtNumber(job.trained_tokens)],
    ["Training file", h("code", {}, job.training_file)],
    ["Validation file", job.validation_file ? h("code", {}, job.validation_file) : "–"],
    ["Seed", String(job.seed)],
    ["Created", fmtTime(job.created_at)],
    ["Finished", job.finished_at ? fmtTime(job.finished_at) : "–"],
  );
  if (job.result_files && job.result_files.length) facts.push(["Result files", job.result_files.map((f, i) => [i ? ", " : "", h("code", {}, f)])]);
  if (job.error) facts.push(["Error", h("span", { class: "bad" }, `${job.error.code}: ${job.error.message}`)]);
  return h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function drawLoss(box, steps, checkpoints) {
  const train = steps.filter((d) => Number.isFinite(d.train_loss)).map((d) => ({ x: Number(d.step), y: d.train_loss }));
  const valid = steps.filter((d) => Number.isFinite(d.valid_loss)).map((d) => ({ x: Number(d.step), y: d.valid_loss }));
  if (!train.length && !valid.length) {
    box.append(h("p", { class: "muted" }, "No training metrics yet: the curve appears with the job's first step."));
    return;
  }
  const last = steps[steps.length - 1];
  const latest = train.length ? train[train.length - 1] : valid[valid.length - 1];
  const label = `Training loss over ${steps.length} steps: from ${fmtNumber((train[0] || valid[0]).y)} to ${fmtNumber(latest.y)} at step ${latest.x}` +
    (last.total_steps ? ` of ${last.total_steps}` : "") + (valid.length ? `; validation loss ${fmtNumber(valid[valid.length - 1].y)}` : "");
  lineChart(box, [{ name: "train loss", points: train }, { name: "validation loss", points: valid }], {
    label,
    xMax: Number(last.total_steps || 0),
    markers: checkpoints.map((c) => ({ x: c.step_number, label: `checkpoint at step ${c.step_number}` })),
  });
  box.append(h("ul", { class: "legend", "aria-hidden": "true" },
    h("li", {}, h("span", { class: "swatch s0" }), "train loss"),
    valid.length ? h("li", {}, h("span", { class: "swatch s1" }), "validation loss") : null,
    checkpoints.length ? h("li", {}, h("span", { class: "swatch marker" }), "checkpoint") : null));
}

function lossTable(steps) {
  const shown = steps.slice(-500).reverse();
  return h("table", { class: "steps" }, h("caption", { class: "visually-hidden" }, "Loss by step, latest first"),
    h("thead", {}, h("tr", {}, ["Step", "Train loss", "Valid loss", "Learning rate"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, shown.map((d) => h("tr", {}, h("td", {}, String(d.step)), h("td", {}, fmtNumber(d.train_loss)),
      h("td", {}, fmtNumber(d.valid_loss)), h("td", {}, d.learning_rate === undefined ? "–" : Number(d.learning_rate).toExponential(2))))));
}

function checkpointTable(checkpoints) {
  if (!checkpoints.length) return h("p", { class: "muted" }, "No checkpoints yet.");
  return h("table", { class: "stack" }, h("caption", { class: "visually-hidden" }, "Checkpoints, latest first"),
    h("thead", {}, h("tr", {}, ["Step", "Checkpoint", "Train loss", "Validation loss", "File"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, checkpoints.map((c) => h("tr", {},
      h("td", {}, `step ${c.step_number}`),
      h("td", {}, h("code", {}, c.fine_tuned_model_checkpoint)),
      h("td", {}, `train ${fmtNumber(c.metrics.train_loss)}`),
      h("td", {}, `valid ${fmtNumber(c.metrics.valid_loss)}`),
      h("td", {}, c.file_id ? h("code", {}, c.file_id) : "–")))));
}

function eventItem(e) {
  const cls = e.level === "error" ? "bad" : e.level === "warn" ? "warn" : "muted";
  return h("li", {}, h("time", { class: "muted" }, fmtTime(e.created_at)), " ", h("span", { class: `badge ${cls}` }, e.type === "metrics" ? "metrics" : e.level), " ", e.message);
}

async function showJob(main, jobId, labels, signal, alive) {
  const path = `/v1/fine_tuning/jobs/${enc(jobId)}`;
  let job = await api(path, { signal });
  const events = []; // newest first, as the API lists them
  const known = new Set();

  /** New events, newest first: pages until one already held (or the first load's cap). */
  async function fetchEvents() {
    const fresh = [];
    let after = null;
    for (let page = 0; page < MAX_EVENT_PAGES; page++) {
      const got = await api(`${path}/events`, { query: { limit: known.size ? 100 : EVENT_PAGE, after }, signal });
      const unseen = got.data.filter((e) => !known.has(e.id));
      fresh.push(...unseen);
      if (!got.has_more || unseen.length < got.data.length || !got.data.length) break;
      after = got.data[got.data.length - 1].id;
    }
    for (const e of fresh) known.add(e.id);
    events.unshift(...fresh);
    return fresh;
  }
  const fetchCheckpoints = async () => (await api(`${path}/checkpoints`, { query: { limit: 100 }, signal })).data;

  const header = h("div");
  const facts = h("div");
  const live = h("p", { class: "muted live", "aria-live": "polite" });
  const tableBox = h("div");
  const plotBox = h("div", { class: "plot-box" });
  const stepsBox = h("details", {}, h("summary", {}, "Loss by step"), tableBox);
  const figure = h("figure", { class: "card chart loss" }, h("figcaption", {}, "Loss"), plotBox, stepsBox);
  const checkpointBox = h("div");
  const eventList = h("ol", { class: "events", "aria-label": "Events, newest first" });
  const eventNote = h("p", { class: "muted" });
  replace(main, header, live, facts, figure, h("h3", {}, "Checkpoints"), checkpointBox, h("h3", {}, "Events"), eventList, eventNote);

  let checkpoints = await fetchCheckpoints();
  let fresh = await fetchEvents();
  function draw() {
    const steps = metricSteps(events);
    replace(header, h("h2", {}, jobTitle(job), " ", badge(job.status)), h("p", { class: "muted" }, job.id));
    replace(facts, jobFacts(job, steps));
    fitted(plotBox, (box) => drawLoss(box, steps, checkpoints));
    stepsBox.hidden = !steps.length;
    replace(tableBox, steps.length ? lossTable(steps) : null);
    replace(checkpointBox, checkpointTable(checkpoints));
    eventList.prepend(...fresh.map(eventItem));
    while (eventList.children.length > SHOWN_EVENTS) eventList.lastElementChild.remove();
    eventNote.textContent = events.length > SHOWN_EVENTS ? `The latest ${SHOWN_EVENTS} of ${events.length} events.` : "";
    if (!events.length) replace(eventList, h("li", { class: "muted" }, "No events."));
    const label = labels.get(job.id);
    if (label) label.textContent = `${job.id} · ${job.status.replace("_", " ")} · ${fmtTime(job.created_at)}`;
    live.textContent = LIVE.has(job.status)
      ? `Updated ${new Date().toLocaleTimeString()}; refreshing every ${POLL_MS / 1000} s while the job is ${job.status.replace("_", " ")}.`
      : "";
  }
  draw();
  if (!LIVE.has(job.status)) return null;
  return every(POLL_MS, async () => {
    const before = job.status;
    [job, checkpoints] = await Promise.all([api(path, { signal }), fetchCheckpoints()]);
    fresh = await fetchEvents();
    if (!alive()) return false;
    draw();
    if (job.status !== before) announce(`Job ${job.status.replace("_", " ")}.`);
    return LIVE.has(job.status);
  }, alive);
}

export async function render(root, params) {
  const controller = new AbortController();
  const signal = controller.signal;
  let stop = null;
  const jobId = params[0] || null;
  const labels = new Map();
  const side = h("aside", { class: "card" }, h("h2", {}, "Jobs"), h("p", { class: "muted" }, "Loading…"));
  const main = h("section", { class: "detail", "aria-label": "Fine-tuning job" });
  const alive = () => !signal.aborted && main.isConnected;
  replace(root, h("h1", {}, "Fine-tuning"), h("div", { class: jobId ? "split picked" : "split" }, side, main));
  const listed = jobList(side, jobId, labels, signal).catch((error) => {
    if (!signal.aborted) replace(side, h("h2", {}, "Jobs"), errorBox(error));
  });
  try {
    if (jobId) stop = await showJob(main, jobId, labels, signal, alive);
    else replace(main, h("p", { class: "muted" }, "Pick a job to see its status, loss curve, checkpoints and events."));
  } catch (error) {
    if (!signal.aborted) replace(main, errorBox(error));
  }
  await listed;
  return () => {
    controller.abort();
    if (stop) stop();
  };
}
