// Playground: chat with a model or a deployed agent, streamed, through chat completions or Responses.
// Tool calls appear inline with their arguments, result and timing; every answer links to its trace.

import { api, listModels, stream } from "../api.js";
import { announce, errorBox, field, fmtMs, h, replace } from "../dom.js";

const state = { messages: [], busy: null, lastBody: null };

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
  const args = Object.entries(body)
    .filter(([k]) => k !== "stream" && k !== "stream_options")
    .map(([k, v]) => `    ${k}=${py(v, "    ")},`)
    .join("\n");
  const head = [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(`${location.origin}/v1`)}, api_key=os.environ.get("UNDERLAY_API_KEY", "none"))`,
    "",
  ];
  if (mode === "responses") {
    return [...head, "stream = client.responses.create(", args, "    stream=True,", ")", "for event in stream:",
      '    if event.type == "response.output_text.delta":', '        print(event.delta, end="", flush=True)', ""].join("\n");
  }
  return [...head, "stream = client.chat.completions.create(", args, "    stream=True,", ")", "for chunk in stream:",
    "    if chunk.choices and chunk.choices[0].delta.content:", '        print(chunk.choices[0].delta.content, end="", flush=True)', ""].join("\n");
}

function toolCard(name) {
  const args = h("pre", { class: "code small" });
  const result = h("pre", { class: "code small" });
  const timing = h("span", { class: "muted" }, "running…");
  const card = h("details", { class: "tool", open: true },
    h("summary", {}, h("strong", {}, `Tool call: ${name}`), " ", timing),
    h("div", { class: "muted" }, "Arguments"), args,
    h("div", { class: "muted" }, "Result"), result);
  return { card, args, result, timing, started: performance.now() };
}

function finishTool(tool, item) {
  const elapsed = performance.now() - tool.started;
  tool.timing.textContent = `${item.status || "done"} · ${fmtMs(elapsed)}`;
  let args = item.arguments ?? (item.queries ? { queries: item.queries } : null);
  if (typeof args === "string") {
    try {
      args = JSON.parse(args);
    } catch {
      // keep the raw text
    }
  }
  tool.args.textContent = typeof args === "string" ? args : JSON.stringify(args, null, 2);
  const result = item.results ?? item.output ?? item.error ?? null;
  tool.result.textContent = result === null ? "(none yet: a function tool's result comes from the caller)" :
    typeof result === "string" ? result : JSON.stringify(result, null, 2);
}

export async function render(root) {
  const [models, agents, stores, shields] = await Promise.all([
    listModels(),
    api("/v1/agents").catch(() => ({ data: [] })),
    api("/v1/vector_stores", { query: { limit: 100 } }).catch(() => ({ data: [] })),
    api("/v1/shields").catch(() => ({ data: [] })),
  ]);
  const llms = models.data.filter((m) => m.model_type === "llm");
  const modelSelect = h("select", { name: "model" },
    h("optgroup", { label: "Models" }, llms.map((m) => h("option", { value: m.id }, m.id))),
    agents.data.length ? h("optgroup", { label: "Deployed agents" },
      agents.data.map((a) => h("option", { value: `agent/${a.name}` }, `agent/${a.name}`))) : null);
  const modeChat = h("input", { type: "radio", name: "mode", value: "chat", checked: true, id: "mode-chat" });
  const modeResp = h("input", { type: "radio", name: "mode", value: "responses", id: "mode-responses" });
  const temperature = h("input", { type: "number", min: 0, max: 2, step: 0.1, value: "0.7", name: "temperature" });
  const maxTokens = h("input", { type: "number", min: 1, max: 32768, step: 1, value: "256", name: "max_tokens" });
  const system = h("textarea", { rows: 3, name: "system", maxlength: 20000, placeholder: "You are a helpful assistant." });
  const searchStore = h("select", { name: "file_search" }, h("option", { value: "" }, "none"),
    stores.data.map((s) => h("option", { value: s.id }, s.name || s.id)));
  const guards = shields.data.map((g) => h("input", { type: "checkbox", name: "guardrails", value: g.id }));
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

  const mode = () => (modeResp.checked ? "responses" : "chat");

  function requestBody(history) {
    const model = modelSelect.value;
    const guardrails = guards.filter((g) => g.checked).map((g) => g.value);
    const temp = temperature.value === "" ? undefined : Number(temperature.value);
    const max = maxTokens.value === "" ? undefined : Number(maxTokens.value);
    if (mode() === "responses") {
      const body = { model, input: history.map((m) => ({ role: m.role, content: m.content })) };
      if (system.value.trim()) body.instructions = system.value.trim();
      if (temp !== undefined) body.temperature = temp;
      if (max !== undefined) body.max_output_tokens = max;
      if (searchStore.value) body.tools = [{ type: "file_search", vector_store_ids: [searchStore.value] }];
      if (guardrails.length) body.guardrails = guardrails;
      body.stream = true;
      return body;
    }
    const messages = system.value.trim() ? [{ role: "system", content: system.value.trim() }] : [];
    const body = { model, messages: [...messages, ...history] };
    if (temp !== undefined) body.temperature = temp;
    if (max !== undefined) body.max_tokens = max;
    if (guardrails.length) body.guardrails = guardrails;
    body.stream = true;
    body.stream_options = { include_usage: true };
    return body;
  }

  /** The request the next Send makes; with an empty message box, the last one sent (or a sample). */
  function refreshCode() {
    const pending = input.value.trim();
    const body = pending || !state.lastBody
      ? requestBody([...state.messages, { role: "user", content: pending || "Hello!" }])
      : state.lastBody;
    code.textContent = snippet("input" in body ? "responses" : "chat", body);
  }

  codeButton.addEventListener("click", () => {
    const show = code.hidden;
    code.hidden = !show;
    codeButton.setAttribute("aria-expanded", String(show));
    if (show) refreshCode();
  });
  for (const el of [modelSelect, modeChat, modeResp, temperature, maxTokens, system, searchStore, input, ...guards]) {
    el.addEventListener("input", () => !code.hidden && refreshCode());
  }
  clear.addEventListener("click", () => {
    state.messages = [];
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

  async function sendMessage(text) {
    emptyHint.remove();
    const history = [...state.messages, { role: "user", content: text }];
    bubble("user", text);
    const answer = bubble("assistant", "");
    answer.node.setAttribute("aria-busy", "true");
    const meta = h("div", { class: "meta muted" }, "waiting…");
    answer.node.append(meta);
    const body = requestBody(history);
    state.lastBody = body;
    const controller = new AbortController();
    state.busy = controller;
    send.disabled = true;
    stop.disabled = false;
    const started = performance.now();
    let firstToken = null;
    let traceId = null;
    let usage = null;
    let reply = "";
    let refusal = "";
    let verdict = null;
    const tools = new Map();
    const addRefusal = (delta) => {
      if (!delta) return;
      refusal += delta;
      if (!verdict) {
        verdict = h("p", { class: "verdict bad", role: "note" });
        answer.node.append(verdict);
      }
      verdict.textContent = `Refused by a guardrail: ${refusal}`;
    };
    const path = mode() === "responses" ? "/v1/responses" : "/v1/chat/completions";
    const addText = (delta) => {
      if (!delta) return;
      if (firstToken === null) firstToken = performance.now() - started;
      reply += delta;
      answer.body.textContent = reply;
      transcript.scrollTop = transcript.scrollHeight;
    };
    try {
      const events = stream(path, body, {
        signal: controller.signal,
        onResponse: (res) => (traceId = res.headers.get("x-trace-id")),
      });
      for await (const { data } of events) {
        if (data.error) throw new Error(data.error.message || "the stream reported an error");
        if (mode() === "chat") {
          const choice = data.choices && data.choices[0];
          if (choice && choice.delta) {
            addText(choice.delta.content);
            addRefusal(choice.delta.refusal);
            for (const call of choice.delta.tool_calls || []) {
              let tool = tools.get(call.index);
              if (!tool) {
                tool = toolCard(call.function?.name || "function");
                tool.raw = "";
                tools.set(call.index, tool);
                answer.node.insertBefore(tool.card, answer.body);
              }
              tool.raw += call.function?.arguments || "";
              tool.args.textContent = tool.raw;
            }
          }
          if (data.usage) usage = data.usage;
        } else if (data.type === "response.output_text.delta") addText(data.delta);
        else if (data.type === "response.refusal.delta") addRefusal(data.delta);
        else if (data.type === "response.output_item.added" && data.item.type !== "message") {
          const item = data.item;
          const tool = toolCard(item.name || item.type);
          tools.set(item.id, tool);
          answer.node.insertBefore(tool.card, answer.body);
        } else if (data.type === "response.output_item.done" && tools.has(data.item.id)) finishTool(tools.get(data.item.id), data.item);
        else if (data.type === "response.completed" || data.type === "response.incomplete") usage = data.response.usage;
        else if (data.type === "response.failed") throw new Error(data.response.error?.message || "the response failed");
      }
      if (mode() === "chat") {
        for (const tool of tools.values()) finishTool(tool, { arguments: tool.raw, status: "requested" });
      }
      state.messages = [...history, { role: "assistant", content: reply }];
    } catch (error) {
      answer.node.append(errorBox(error.name === "AbortError" ? new Error("Stopped.") : error));
      if (reply) state.messages = [...history, { role: "assistant", content: reply }];
    } finally {
      state.busy = null;
      send.disabled = false;
      stop.disabled = true;
      answer.node.removeAttribute("aria-busy");
      const total = performance.now() - started;
      const parts = [`${body.model}`, `first token ${fmtMs(firstToken)}`, `total ${fmtMs(total)}`];
      if (usage) {
        const inTok = usage.prompt_tokens ?? usage.input_tokens;
        const outTok = usage.completion_tokens ?? usage.output_tokens;
        parts.push(`${inTok} in / ${outTok} out tokens`);
      }
      replace(meta, parts.join(" · "));
      if (traceId) {
        meta.append(" · ", h("a", { href: `#/traces/${encodeURIComponent(traceId)}`, class: "trace-link" }, "View trace"));
      }
      if (!code.hidden) refreshCode();
      announce("Answer complete.");
    }
  }

  const composer = h("form", { class: "composer", "aria-label": "Send a message" },
    field("Message", input), h("div", { class: "row" }, send, stop, clear));
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || state.busy) return;
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
    field("File search (Responses)", searchStore, "Lets the model search a vector store."),
    guards.length ? h("fieldset", {}, h("legend", {}, "Guardrails (input and output)"),
      guards.map((g) => h("label", { class: "inline" }, g, ` ${g.value}`))) : null,
    codeButton);

  replace(root,
    h("h1", {}, "Playground"),
    h("div", { class: "split" }, settings,
      h("section", { class: "chat", "aria-label": "Chat" }, code, transcript, composer)));
  state.messages = [];
  state.lastBody = null;
  return () => state.busy && state.busy.abort();
}
