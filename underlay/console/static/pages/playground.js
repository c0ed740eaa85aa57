// Playground: chat with a model or a deployed agent, streamed, through chat completions or Responses.
// Tools: file_search (Responses), registered tool groups (MCP servers and builtins) and function tools
// whose results the user types. Every call shows its arguments, result and timing inline; shields
// chosen as guardrails show their verdict on the input and the output; every answer links to its trace.
//
// The conversation is kept in one neutral list (user and assistant text, tool calls and their results,
// the server's own tool items), so either API can carry it on and switching between them keeps it.

import { api, listModels, stream } from "../api.js";
import { announce, errorBox, field, fmtMs, h, replace } from "../dom.js";

const MAX_ROUNDS = 6; // model turns for one message: each tool result sends the conversation back
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const SAMPLE_SCHEMA = `{
  "type": "object",
  "properties": {
    "city": {"type": "string", "description": "City name"}
  },
  "required": ["city"]
}`;
// Request fields the openai SDK takes as arguments; anything else goes in extra_body in "view as code".
const SDK_ARGS = {
  chat: new Set(["model", "messages", "temperature", "max_tokens", "tools", "tool_choice", "stream", "stream_options"]),
  responses: new Set(["model", "input", "instructions", "temperature", "max_output_tokens", "tools", "tool_choice", "stream"]),
};

/** A JSON value as a Python literal (for "view as code"). */
function py(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  const inner = indent + "    ";
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => inner + py(v, inner)).join(",\n")},\n${indent}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${py(v, inner)}`).join(",\n")},\n${indent}}`;
}

function snippet(mode, body) {
  const known = SDK_ARGS[mode];
  const extra = {};
  const args = [];
  for (const [k, v] of Object.entries(body)) {
    if (k === "stream" || k === "stream_options") continue;
    if (known.has(k)) args.push(`    ${k}=${py(v, "    ")},`);
    else extra[k] = v;
  }
  if (Object.keys(extra).length) args.push(`    extra_body=${py(extra, "    ")},`);
  const head = [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(`${location.origin}/v1`)}, api_key=os.environ.get("UNDERLAY_API_KEY", "none"))`,
    "",
  ];
  if (mode === "responses") {
    return [...head, "stream = client.responses.create(", ...args, "    stream=True,", ")", "for event in stream:",
      '    if event.type == "response.output_text.delta":', '        print(event.delta, end="", flush=True)', ""].join("\n");
  }
  return [...head, "stream = client.chat.completions.create(", ...args, "    stream=True,", ")", "for chunk in stream:",
    "    if chunk.choices and chunk.choices[0].delta.content:", '        print(chunk.choices[0].delta.content, end="", flush=True)', ""].join("\n");
}

function pretty(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

/** The conversation as chat completions messages. */
function chatMessages(entries) {
  const out = [];
  const lastAssistant = () => {
    const last = out[out.length - 1];
    if (last && last.role === "assistant") return last;
    const fresh = { role: "assistant", content: null };
    out.push(fresh);
    return fresh;
  };
  const call = (id, name, args) => {
    const target = lastAssistant();
    (target.tool_calls ||= []).push({ id, type: "function", function: { name, arguments: args || "{}" } });
  };
  for (const e of entries) {
    if (e.type === "user") out.push({ role: "user", content: e.text });
    else if (e.type === "assistant") out.push({ role: "assistant", content: e.text });
    else if (e.type === "call") call(e.id, e.name, e.arguments);
    else if (e.type === "result") out.push({ role: "tool", tool_call_id: e.id, content: e.output });
    else if (e.type === "server") {
      // A tool the Responses server ran: the same call and result as a client-run one.
      const { item } = e;
      const name = item.type === "mcp_call" ? item.name : item.type.replace(/_call$/, "");
      const args = item.arguments ?? JSON.stringify({ queries: item.queries || [] });
      const output = item.error ? `Error: ${pretty(item.error)}` : item.output ?? pretty(item.results ?? []);
      call(item.id, name, args);
      out.push({ role: "tool", tool_call_id: item.id, content: String(output) });
    }
  }
  return out;
}

/** The conversation as Responses input items. */
function responsesInput(entries) {
  const out = [];
  for (const e of entries) {
    if (e.type === "user") out.push({ role: "user", content: e.text });
    else if (e.type === "assistant") out.push({ role: "assistant", content: e.text });
    else if (e.type === "call") out.push({ type: "function_call", call_id: e.id, name: e.name, arguments: e.arguments || "{}" });
    else if (e.type === "result") out.push({ type: "function_call_output", call_id: e.id, output: e.output });
    else if (e.type === "server") out.push(e.item);
  }
  return out;
}

/** The text a shield reads for a conversation: what the server's guardrails check, minus tool plumbing. */
function shieldMessages(system, entries) {
  const out = system ? [{ role: "system", content: system }] : [];
  for (const e of entries) {
    if (e.type === "user" || e.type === "assistant") out.push({ role: e.type, content: e.text });
    else if (e.type === "result") out.push({ role: "tool", content: e.output });
  }
  return out.filter((m) => m.content);
}

function categoriesOf(violation) {
  const meta = violation.metadata || {};
  return [...(meta.categories || []), ...(meta.underlay_categories || [])];
}

/** One verdict as a badge: "input · pii: no violation", "output · pii: warn (pii:email)". */
function verdictBadge(side, shield, result) {
  if (result instanceof Error) return h("span", { class: "badge muted" }, `${side} · ${shield}: not checked (${result.message})`);
  const v = result.violation;
  if (!v) return h("span", { class: "badge ok" }, `${side} · ${shield}: no violation`);
  const cats = categoriesOf(v);
  const cls = v.violation_level === "error" ? "bad" : "warn";
  return h("span", { class: `badge ${cls}`, title: v.user_message || "" },
    `${side} · ${shield}: ${v.violation_level}${cats.length ? ` (${cats.join(", ")})` : ""}`);
}

/** A card for one tool call; its parts are filled in as the call goes on. */
function toolCard(title, { listing = false } = {}) {
  const args = h("pre", { class: "code small" });
  const result = h("pre", { class: "code small" });
  const timing = h("span", { class: "muted" }, "running…");
  const heading = h("strong", {}, title);
  const extra = h("div");
  // A server's tool listing has no arguments and is closed by default: the calls are what matter.
  const card = h("details", { class: "tool", open: !listing },
    h("summary", {}, heading, " ", timing),
    listing ? null : [h("div", { class: "muted" }, "Arguments"), args],
    h("div", { class: "muted" }, listing ? "Tools" : "Result"), result, extra);
  return { card, heading, args, result, timing, extra, started: performance.now() };
}

function finishCard(card, { status, output, error, elapsed }) {
  card.timing.textContent = `${status} · ${fmtMs(elapsed ?? performance.now() - card.started)}`;
  card.timing.className = status === "failed" || error ? "bad" : "muted";
  card.result.textContent = error ? `Error: ${pretty(error)}` : pretty(output);
}

export async function render(root, _params = [], { signal } = {}) {
  const state = { entries: [], busy: null, lastBody: null, waiting: null };
  const models = await listModels();
  const llms = models.data.filter((m) => m.model_type === "llm");
  const agentGroup = h("optgroup", { label: "Deployed agents", hidden: true });
  const modelSelect = h("select", { name: "model" },
    h("optgroup", { label: "Models" }, llms.map((m) => h("option", { value: m.id }, m.id))), agentGroup);
  const modeChat = h("input", { type: "radio", name: "mode", value: "chat", checked: true, id: "mode-chat" });
  const modeResp = h("input", { type: "radio", name: "mode", value: "responses", id: "mode-responses" });
  const temperature = h("input", { type: "number", min: 0, max: 2, step: 0.1, value: "0.7", name: "temperature" });
  const maxTokens = h("input", { type: "number", min: 1, max: 32768, step: 1, value: "256", name: "max_tokens" });
  const system = h("textarea", { rows: 3, name: "system", maxlength: 20000, placeholder: "You are a helpful assistant." });
  const searchStore = h("select", { name: "file_search" }, h("option", { value: "" }, "none"));
  const groupsBox = h("div", { class: "checks" }, h("p", { class: "muted small" }, "Loading…"));
  const functionsBox = h("div", { class: "functions" });
  const addFunction = h("button", { type: "button", class: "secondary small" }, "Add function tool");
  const toolChoice = h("select", { name: "tool_choice" });
  const guardsBox = h("div", { class: "checks" }, h("p", { class: "muted small" }, "Loading…"));
  const transcript = h("div", { class: "transcript", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const emptyHint = h("p", { class: "muted hint" },
    "Send a message to start. Answers stream in token by token; each shows its timing and tokens and links to its trace.");
  transcript.append(emptyHint);
  const input = h("textarea", { rows: 3, name: "message", required: true, maxlength: 100000, placeholder: "Ask something…" });
  const send = h("button", { type: "submit" }, "Send");
  const stop = h("button", { type: "button", class: "secondary", disabled: true }, "Stop");
  const clear = h("button", { type: "button", class: "secondary" }, "New chat");
  const codeButton = h("button", { type: "button", class: "secondary", "aria-expanded": "false" }, "View as code");
  const code = h("pre", { class: "code", hidden: true, tabindex: 0, "aria-label": "Equivalent Python code" });
  const composerNote = h("p", { class: "muted small", "aria-live": "polite" });

  const mode = () => (modeResp.checked ? "responses" : "chat");
  const guards = []; // checkboxes, filled when /v1/shields answers
  const groups = new Map(); // tool group id → {checkbox, tools: [...] | null, error}
  const functions = []; // function tool editors

  // ---- function tools -----------------------------------------------------------------------------

  function functionEditor() {
    const n = functions.length + 1;
    const name = h("input", { name: "function-name", maxlength: 64, placeholder: "get_weather", spellcheck: "false", autocomplete: "off" });
    const description = h("input", { name: "function-description", maxlength: 1024, placeholder: "Current weather for a city" });
    const schema = h("textarea", { rows: 7, name: "function-parameters", class: "mono", spellcheck: "false" });
    schema.value = SAMPLE_SCHEMA;
    const problem = h("p", { class: "bad small", "aria-live": "polite" });
    const remove = h("button", { type: "button", class: "secondary small" }, "Remove");
    const box = h("div", { class: "function", role: "group", "aria-label": `Function tool ${n}` },
      field("Function name", name), field("Description", description),
      field("Parameters (JSON schema)", schema, "The arguments the model must produce."), problem, remove);
    const editor = { box, name, description, schema, problem };
    /** The tool's definition, or null with the reason shown when it is not valid yet. */
    editor.spec = () => {
      let reason = "";
      let parameters = null;
      if (!FUNCTION_NAME.test(name.value.trim())) reason = "The name must be 1-64 letters, digits, _ or -.";
      else {
        try {
          parameters = JSON.parse(schema.value || "{}");
          if (!parameters || typeof parameters !== "object" || Array.isArray(parameters) || parameters.type !== "object") {
            reason = 'The parameters must be a JSON schema object with "type": "object".';
          }
        } catch (error) {
          reason = `The parameters are not valid JSON: ${error.message}`;
        }
      }
      problem.textContent = reason;
      schema.setAttribute("aria-invalid", String(Boolean(reason) && !reason.startsWith("The name")));
      name.setAttribute("aria-invalid", String(reason.startsWith("The name")));
      if (reason) return null;
      return { name: name.value.trim(), description: description.value.trim(), parameters };
    };
    remove.addEventListener("click", () => {
      functions.splice(functions.indexOf(editor), 1);
      box.remove();
      refreshChoices();
      addFunction.focus();
    });
    for (const el of [name, description, schema]) el.addEventListener("change", () => { editor.spec(); refreshChoices(); });
    for (const el of [name, description, schema]) el.addEventListener("input", () => !code.hidden && refreshCode());
    functions.push(editor);
    functionsBox.append(box);
    return editor;
  }
  addFunction.addEventListener("click", () => {
    functionEditor().name.focus();
    refreshChoices();
  });

  // ---- tool groups (MCP servers and builtins) -----------------------------------------------------

  async function groupTools(id) {
    const group = groups.get(id);
    if (group.tools) return group.tools;
    const listing = await api("/v1/tools", { query: { toolgroup_id: id } });
    group.tools = listing.data;
    return group.tools;
  }

  function groupRow(g) {
    const id = g.identifier || g.id;
    const box = h("input", { type: "checkbox", name: "toolgroups", value: id });
    const note = h("small", { class: "muted" });
    groups.set(id, { checkbox: box, tools: null, note });
    box.addEventListener("change", async () => {
      if (!box.checked) return refreshChoices();
      note.textContent = " listing…";
      try {
        const tools = await groupTools(id);
        note.textContent = ` ${tools.map((t) => t.name).join(", ") || "no tools"}`;
      } catch (error) {
        note.textContent = ` ${error.message}`;
        note.className = "bad";
      }
      refreshChoices();
    });
    const kind = g.mcp_endpoint ? "MCP" : g.provider_id;
    return h("label", { class: "inline" }, box, ` ${id} `, h("span", { class: "muted" }, `(${kind})`), note);
  }

  const checkedGroups = () => [...groups].filter(([, g]) => g.checkbox.checked).map(([id]) => id);

  /** Tool choice options: auto, required, none, then each function and each listed group tool. */
  function refreshChoices() {
    const before = toolChoice.value;
    const options = [["auto", "auto"], ["required", "required"], ["none", "none"]];
    for (const f of functions) {
      const name = f.name.value.trim();
      if (FUNCTION_NAME.test(name)) options.push([`fn:${name}`, `function ${name}`]);
    }
    for (const id of checkedGroups()) {
      for (const t of groups.get(id).tools || []) options.push([`mcp:${id}:${t.name}`, `${id} · ${t.name}`]);
    }
    replace(toolChoice, options.map(([value, label]) => h("option", { value }, label)));
    toolChoice.value = options.some(([v]) => v === before) ? before : "auto";
    if (!code.hidden) refreshCode();
  }
  refreshChoices();

  // ---- requests -----------------------------------------------------------------------------------

  /** The tools of the next request, or an Error naming what to fix. */
  async function toolsFor(currentMode) {
    const tools = [];
    for (const f of functions) {
      const spec = f.spec();
      if (!spec) {
        f.schema.focus();
        throw new Error(`Function tool: ${f.problem.textContent}`);
      }
      if (currentMode === "responses") tools.push({ type: "function", ...spec });
      else tools.push({ type: "function", function: spec });
    }
    for (const id of checkedGroups()) {
      if (currentMode === "responses") {
        tools.push({ type: "mcp", server_label: id, require_approval: "never" }); // the server runs them
      } else {
        for (const t of await groupTools(id)) { // the console runs them through /v1/tool-runtime/invoke
          tools.push({ type: "function", function: { name: t.name, description: t.description || "", parameters: t.input_schema || { type: "object", properties: {} } } });
        }
      }
    }
    if (currentMode === "responses" && searchStore.value) tools.push({ type: "file_search", vector_store_ids: [searchStore.value] });
    return tools;
  }

  function choiceFor(currentMode) {
    const value = toolChoice.value;
    if (value === "auto") return undefined;
    if (value === "required" || value === "none") return value;
    if (value.startsWith("fn:")) {
      const name = value.slice(3);
      return currentMode === "responses" ? { type: "function", name } : { type: "function", function: { name } };
    }
    const [, group, ...rest] = value.split(":");
    const name = rest.join(":");
    return currentMode === "responses" ? { type: "mcp", server_label: group, name } : { type: "function", function: { name } };
  }

  /** The request body for the conversation so far; `first` is a message's first model turn (after a
   * tool result the model chooses freely again, so a forced tool choice cannot loop). */
  async function requestBody(entries, first = true) {
    const currentMode = mode();
    const model = modelSelect.value;
    const guardrails = guards.filter((g) => g.checked).map((g) => g.value);
    const temp = temperature.value === "" ? undefined : Number(temperature.value);
    const max = maxTokens.value === "" ? undefined : Number(maxTokens.value);
    const tools = await toolsFor(currentMode);
    const choice = tools.length && first ? choiceFor(currentMode) : undefined;
    if (currentMode === "responses") {
      const body = { model, input: responsesInput(entries) };
      if (system.value.trim()) body.instructions = system.value.trim();
      if (temp !== undefined) body.temperature = temp;
      if (max !== undefined) body.max_output_tokens = max;
      if (tools.length) body.tools = tools;
      if (choice !== undefined) body.tool_choice = choice;
      if (guardrails.length) body.guardrails = guardrails;
      body.stream = true;
      return body;
    }
    const messages = system.value.trim() ? [{ role: "system", content: system.value.trim() }] : [];
    const body = { model, messages: [...messages, ...chatMessages(entries)] };
    if (temp !== undefined) body.temperature = temp;
    if (max !== undefined) body.max_tokens = max;
    if (tools.length) body.tools = tools;
    if (choice !== undefined) body.tool_choice = choice;
    if (guardrails.length) body.guardrails = guardrails;
    body.stream = true;
    body.stream_options = { include_usage: true };
    return body;
  }

  /** The request the next Send makes; with an empty message box, the last one sent (or a sample). */
  async function refreshCode() {
    const pending = input.value.trim();
    try {
      const body = pending || !state.lastBody
        ? await requestBody([...state.entries, { type: "user", text: pending || "Hello!" }])
        : state.lastBody;
      code.textContent = snippet("input" in body ? "responses" : "chat", body);
    } catch (error) {
      code.textContent = `# ${error.message}`;
    }
  }

  codeButton.addEventListener("click", () => {
    const show = code.hidden;
    code.hidden = !show;
    codeButton.setAttribute("aria-expanded", String(show));
    if (show) refreshCode();
  });
  for (const el of [modelSelect, modeChat, modeResp, temperature, maxTokens, system, searchStore, toolChoice, input]) {
    el.addEventListener("input", () => !code.hidden && refreshCode());
  }

  function setBusy(busy) {
    send.disabled = busy;
    stop.disabled = !busy;
  }

  clear.addEventListener("click", () => {
    const running = state.busy;
    state.busy = null; // the message under way ends without writing into the new chat
    if (running) running.abort();
    setBusy(false);
    composerNote.textContent = "";
    state.entries = [];
    state.lastBody = null;
    replace(transcript, emptyHint);
    announce("New chat.");
  });
  stop.addEventListener("click", () => state.busy && state.busy.abort());

  function bubble(role, text) {
    const body = h("div", { class: "text" }, text);
    const node = h("article", { class: `msg ${role}` }, h("div", { class: "role" }, role), body);
    transcript.append(node);
    return { node, body };
  }

  // ---- shields ------------------------------------------------------------------------------------

  function runShields(ids, messages) {
    return Promise.all(ids.map((id) =>
      api("/v1/safety/run-shield", { method: "POST", body: { shield_id: id, messages } }).catch((error) => error)));
  }

  function verdictsBox(node) {
    const box = h("div", { class: "verdicts", role: "group", "aria-label": "Shield verdicts" }, h("span", { class: "muted" }, "Shields:"));
    node.append(box);
    return box;
  }

  // ---- one model turn -----------------------------------------------------------------------------

  /** Stream one request; returns what the turn produced. Tool cards and text go into `answer`. */
  async function modelTurn(body, answer, controller) {
    const turn = { text: "", refusal: "", calls: [], server: [], usage: null, traceId: null, firstToken: null, stop: null };
    const started = performance.now();
    const cards = new Map();
    let verdict = null;
    const addRefusal = (delta) => {
      if (!delta) return;
      turn.refusal += delta;
      if (!verdict) {
        verdict = h("p", { class: "verdict bad", role: "note" });
        answer.node.append(verdict);
      }
      verdict.textContent = `Refused by a guardrail: ${turn.refusal}`;
    };
    const addText = (delta) => {
      if (!delta) return;
      if (turn.firstToken === null) turn.firstToken = performance.now() - started;
      turn.text += delta;
      answer.body.textContent = turn.text;
      transcript.scrollTop = transcript.scrollHeight;
    };
    const newCard = (key, title, options) => {
      const card = toolCard(title, options);
      cards.set(key, card);
      answer.node.insertBefore(card.card, answer.body);
      return card;
    };
    const isChat = !("input" in body);
    const path = isChat ? "/v1/chat/completions" : "/v1/responses";
    const events = stream(path, body, { signal: controller.signal, onResponse: (res) => (turn.traceId = res.headers.get("x-trace-id")) });
    for await (const { data } of events) {
      if (data.error) throw new Error(data.error.message || "the stream reported an error");
      if (isChat) {
        const choice = data.choices && data.choices[0];
        if (choice && choice.delta) {
          addText(choice.delta.content);
          addRefusal(choice.delta.refusal);
          for (const delta of choice.delta.tool_calls || []) {
            let call = turn.calls.find((c) => c.index === delta.index);
            if (!call) {
              call = { index: delta.index, id: delta.id || `call_${delta.index}`, name: delta.function?.name || "function", arguments: "" };
              turn.calls.push(call);
              call.card = newCard(`chat-${delta.index}`, `Tool call: ${call.name}`);
            }
            call.arguments += delta.function?.arguments || "";
            call.card.args.textContent = call.arguments;
          }
        }
        if (choice && choice.finish_reason) turn.stop = choice.finish_reason;
        if (data.usage) turn.usage = data.usage;
        continue;
      }
      const item = data.item;
      if (data.type === "response.output_text.delta") addText(data.delta);
      else if (data.type === "response.refusal.delta") addRefusal(data.delta);
      else if (data.type === "response.output_item.added" && item.type !== "message") {
        const title = item.type === "mcp_list_tools" ? `Tool listing: ${item.server_label}`
          : item.type === "mcp_call" ? `Tool call: ${item.server_label} · ${item.name}`
            : `Tool call: ${item.name || item.type.replace(/_call$/, "")}`;
        newCard(item.id, title, { listing: item.type === "mcp_list_tools" });
      } else if ((data.type === "response.function_call_arguments.delta" || data.type === "response.mcp_call_arguments.delta") && cards.has(data.item_id)) {
        const card = cards.get(data.item_id);
        card.args.textContent += data.delta;
      } else if (data.type === "response.output_item.done" && cards.has(item.id)) {
        const card = cards.get(item.id);
        if (item.type === "function_call") {
          card.args.textContent = pretty(item.arguments);
          turn.calls.push({ id: item.call_id, name: item.name, arguments: item.arguments, card });
        } else if (item.type === "mcp_list_tools") {
          finishCard(card, { status: item.error ? "failed" : "listed", output: (item.tools || []).map((t) => t.name).join(", "), error: item.error });
        } else {
          card.args.textContent = pretty(item.arguments ?? (item.queries ? { queries: item.queries } : item.action ?? null));
          finishCard(card, { status: item.status || "done", output: item.output ?? item.results ?? null, error: item.error });
          turn.server.push(item);
        }
      } else if (data.type === "response.completed" || data.type === "response.incomplete") {
        turn.usage = data.response.usage;
        if (data.response.incomplete_details) turn.stop = `incomplete: ${data.response.incomplete_details.reason}`;
      } else if (data.type === "response.failed") throw new Error(data.response.error?.message || "the response failed");
    }
    turn.elapsed = performance.now() - started;
    return turn;
  }

  /** The result of each call the console answers: a function's typed by the user, a group tool's run
   * through /v1/tool-runtime/invoke. Resolves when every call has one; rejects when stopped. */
  function collectResults(calls, controller) {
    const groupTool = new Map();
    if (mode() === "chat") {
      for (const id of checkedGroups()) for (const t of groups.get(id).tools || []) if (!groupTool.has(t.name)) groupTool.set(t.name, id);
    }
    const fnNames = new Set(functions.map((f) => f.name.value.trim()));
    return Promise.all(calls.map((call) => new Promise((done, reject) => {
      const { card } = call;
      let settled = false;
      const resolve = (value) => {
        settled = true;
        done(value);
      };
      const cancel = () => {
        if (settled) return;
        card.timing.textContent = "cancelled";
        replace(card.extra);
        reject(new DOMException("Stopped.", "AbortError"));
      };
      if (controller.signal.aborted) return cancel();
      controller.signal.addEventListener("abort", cancel, { once: true });
      const group = !fnNames.has(call.name) ? groupTool.get(call.name) : undefined;
      if (group) {
        card.heading.textContent = `Tool call: ${group} · ${call.name}`;
        const started = performance.now();
        let kwargs = {};
        try {
          kwargs = JSON.parse(call.arguments || "{}");
        } catch {
          // the tool runtime gets none and says what is missing
        }
        api("/v1/tool-runtime/invoke", { method: "POST", body: { tool_name: call.name, kwargs, toolgroup_id: group }, signal: controller.signal })
          .then((res) => {
            const text = (res.content || []).map((c) => c.text ?? JSON.stringify(c)).join("\n");
            const error = res.error_message || null;
            finishCard(card, { status: error ? "failed" : "completed", output: text, error, elapsed: performance.now() - started });
            resolve(error ? `Error: ${error}` : text);
          })
          .catch((error) => {
            if (error.name === "AbortError") return;
            finishCard(card, { status: "failed", error: error.message, elapsed: performance.now() - started });
            resolve(`Error: ${error.message}`);
          });
        return;
      }
      // A function tool: the caller (you) runs it and types what it returned.
      const started = performance.now();
      card.timing.textContent = "waiting for your result";
      card.result.textContent = "";
      const answerBox = h("textarea", { rows: 2, name: "tool-result", maxlength: 100000, placeholder: '{"temperature": 21}' });
      const submit = h("button", { type: "submit", class: "small" }, "Send result");
      const form = h("form", { class: "tool-result", "aria-label": `Result of ${call.name}` }, field(`Result of ${call.name}`, answerBox), submit);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const text = answerBox.value;
        replace(card.extra);
        finishCard(card, { status: "answered", output: text, elapsed: performance.now() - started });
        card.timing.textContent = `answered after ${fmtMs(performance.now() - started)}`;
        resolve(text);
      });
      answerBox.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
      });
      replace(card.extra, form);
    })));
  }

  function writeMeta(meta, body, turn) {
    const parts = [`${body.model}`, `first token ${fmtMs(turn.firstToken)}`, `total ${fmtMs(turn.elapsed)}`];
    if (turn.usage) {
      const inTok = turn.usage.prompt_tokens ?? turn.usage.input_tokens;
      const outTok = turn.usage.completion_tokens ?? turn.usage.output_tokens;
      parts.push(`${inTok} in / ${outTok} out tokens`);
    }
    if (turn.stop && !["stop", "tool_calls", "content_filter"].includes(turn.stop)) parts.push(`stopped: ${turn.stop}`);
    replace(meta, parts.join(" · "));
    if (turn.traceId) {
      meta.append(" · ", h("a", { href: `#/traces/${encodeURIComponent(turn.traceId)}`, class: "trace-link" }, "View trace"));
    }
  }

  // ---- one message: model turns until the model answers without calling a tool -------------------

  async function sendMessage(text) {
    emptyHint.remove();
    const start = state.entries.length;
    const entries = [...state.entries, { type: "user", text }];
    bubble("user", text);
    const controller = new AbortController();
    state.busy = controller;
    setBusy(true);
    composerNote.textContent = "";
    const shieldIds = guards.filter((g) => g.checked).map((g) => g.value);
    const inputVerdicts = shieldIds.length ? runShields(shieldIds, shieldMessages(system.value.trim(), entries)) : null;
    let answer = null;
    try {
      for (let round = 0; ; round++) {
        if (controller.signal.aborted) throw new DOMException("Stopped.", "AbortError");
        const body = await requestBody(entries, round === 0);
        state.lastBody = body;
        answer = bubble("assistant", "");
        answer.node.setAttribute("aria-busy", "true");
        const meta = h("div", { class: "meta muted" }, "waiting…");
        answer.node.append(meta);
        let turn;
        try {
          turn = await modelTurn(body, answer, controller);
        } finally {
          answer.node.removeAttribute("aria-busy");
        }
        writeMeta(meta, body, turn);
        for (const item of turn.server) entries.push({ type: "server", item });
        if (turn.text) entries.push({ type: "assistant", text: turn.text });
        if (shieldIds.length) {
          const box = verdictsBox(answer.node);
          if (round === 0) {
            const results = await inputVerdicts;
            results.forEach((r, i) => box.append(" ", verdictBadge("input", shieldIds[i], r)));
            turn.inputBlocked = results.some((r) => !(r instanceof Error) && r.violation?.violation_level === "error");
          }
          if (turn.refusal && !turn.inputBlocked) {
            box.append(" ", h("span", { class: "badge bad" }, "output: blocked (the refused text was never sent)"));
          } else if (turn.text) {
            const results = await runShields(shieldIds, shieldMessages(system.value.trim(), entries));
            results.forEach((r, i) => box.append(" ", verdictBadge("output", shieldIds[i], r)));
          }
        }
        if (!turn.calls.length) break;
        if (round + 1 >= MAX_ROUNDS) {
          answer.node.append(errorBox(new Error(`Stopped after ${MAX_ROUNDS} model turns; send a message to go on.`)));
          break;
        }
        for (const call of turn.calls) entries.push({ type: "call", id: call.id, name: call.name, arguments: call.arguments });
        const pending = collectResults(turn.calls, controller);
        const first = answer.node.querySelector(".tool-result textarea");
        if (first) {
          composerNote.textContent = "The model called a function tool: type its result in the call above.";
          announce("The model called a function tool: type its result.");
          first.focus();
        }
        const results = await pending;
        composerNote.textContent = "";
        turn.calls.forEach((call, i) => entries.push({ type: "result", id: call.id, output: results[i] }));
      }
    } catch (error) {
      const stopped = error.name === "AbortError";
      (answer ? answer.node : transcript).append(errorBox(stopped ? new Error("Stopped.") : error));
      // A call without its result cannot be sent again: leave the unanswered round out.
      while (entries.length > start && entries[entries.length - 1].type === "call") entries.pop();
      composerNote.textContent = "";
    } finally {
      if (state.busy === controller) {
        state.entries = entries;
        state.busy = null;
        setBusy(false);
        if (!code.hidden) refreshCode();
        announce("Answer complete.");
      }
    }
  }

  const composer = h("form", { class: "composer", "aria-label": "Send a message" },
    field("Message", input), composerNote, h("div", { class: "row" }, send, stop, clear));
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || state.busy) return;
    // A function tool that is not valid yet is fixed first; the message stays in its box meanwhile.
    const invalid = functions.find((f) => !f.spec());
    if (invalid) {
      replace(composerNote, errorBox(new Error(`Function tool ${functions.indexOf(invalid) + 1}: ${invalid.problem.textContent}`)));
      (invalid.name.getAttribute("aria-invalid") === "true" ? invalid.name : invalid.schema).focus();
      return;
    }
    input.value = "";
    sendMessage(text);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) composer.requestSubmit();
  });

  const settings = h("form", { class: "settings card", "aria-label": "Settings", onsubmit: (e) => e.preventDefault() },
    h("h2", {}, "Settings"),
    llms.length ? field("Model or agent", modelSelect) : errorBox(new Error("No language model is registered.")),
    h("fieldset", {}, h("legend", {}, "API"),
      h("label", { class: "inline" }, modeChat, " Chat completions"),
      h("label", { class: "inline" }, modeResp, " Responses")),
    field("Temperature", temperature),
    field("Max tokens", maxTokens),
    field("System prompt", system),
    h("fieldset", { class: "tools" }, h("legend", {}, "Tools"),
      field("File search (Responses)", searchStore, "Lets the model search a vector store."),
      h("div", { role: "group", "aria-labelledby": "groups-label" },
        h("div", { id: "groups-label", class: "label" }, "Tool groups"), groupsBox,
        h("small", { class: "muted" }, "Responses: the server calls them (MCP). Chat completions: the console calls them for the model.")),
      h("div", { role: "group", "aria-labelledby": "functions-label" },
        h("div", { id: "functions-label", class: "label" }, "Function tools"), functionsBox, addFunction,
        h("small", { class: "muted" }, "When the model calls one, you type its result.")),
      field("Tool choice", toolChoice, "Applies to a message's first model turn.")),
    h("fieldset", {}, h("legend", {}, "Guardrails (input and output)"), guardsBox),
    codeButton);

  replace(root,
    h("h1", {}, "Playground"),
    h("div", { class: "split" }, settings,
      h("section", { class: "chat", "aria-label": "Chat" }, code, transcript, composer)));

  // The rest of the settings fill in as their lists arrive: the page can send before they do.
  const later = (path, query) => api(path, { query, signal }).catch((error) => ({ data: [], error }));
  later("/v1/agents").then((agents) => {
    if (!agents.data.length) return;
    agentGroup.append(...agents.data.map((a) => h("option", { value: `agent/${a.name}` }, `agent/${a.name}`)));
    agentGroup.hidden = false;
  });
  later("/v1/vector_stores", { limit: 100 }).then((stores) => {
    searchStore.append(...stores.data.map((s) => h("option", { value: s.id }, s.name || s.id)));
  });
  later("/v1/toolgroups").then((list) => {
    replace(groupsBox, list.error && list.error.name !== "AbortError" && list.error.status !== 404 ? errorBox(list.error)
      : list.data.length ? list.data.map(groupRow) : h("p", { class: "muted small" }, "No tool groups are registered."));
  });
  later("/v1/shields").then((shields) => {
    guards.push(...shields.data.map((g) => h("input", { type: "checkbox", name: "guardrails", value: g.id })));
    for (const g of guards) g.addEventListener("input", () => !code.hidden && refreshCode());
    replace(guardsBox, guards.length ? guards.map((g) => h("label", { class: "inline" }, g, ` ${g.value}`))
      : h("p", { class: "muted small" }, "No shields are registered."));
  });
  return () => state.busy && state.busy.abort();
}
