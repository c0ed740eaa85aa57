// Safety: run any shield on a text and see its verdict and categories; this tab's recent violations.

import { api } from "../api.js";
import { announce, errorBox, field, h, replace } from "../dom.js";

const recent = [];

function verdict(result) {
  const v = result.violation;
  if (!v) return h("p", { class: "ok verdict" }, "No violation.");
  const categories = [...(v.metadata?.categories || []), ...(v.metadata?.underlay_categories || [])];
  return h("div", { class: "verdict" },
    h("p", { class: v.violation_level === "error" ? "bad" : "warn" }, `Violation (${v.violation_level})`),
    v.user_message ? h("p", {}, v.user_message) : null,
    categories.length ? h("ul", { class: "tags", "aria-label": "Categories" }, categories.map((c) => h("li", {}, c))) : null,
    h("details", {}, h("summary", {}, "Metadata"), h("pre", { class: "code small" }, JSON.stringify(v.metadata, null, 2))));
}

export async function render(root, _params = [], { signal } = {}) {
  const shields = await api("/v1/shields", { signal });
  if (!shields.data.length) {
    replace(root, h("h1", {}, "Safety"), h("p", { class: "muted" }, "No shields are registered on this server."));
    return null;
  }
  const shield = h("select", { name: "shield" }, shields.data.map((s) => h("option", { value: s.id }, `${s.id} (${s.provider_id})`)));
  const role = h("select", { name: "role" }, ["user", "assistant"].map((r) => h("option", { value: r }, r)));
  const text = h("textarea", { rows: 5, name: "text", required: true, maxlength: 100000 });
  const out = h("div", { "aria-live": "polite" });
  const history = h("div");
  const form = h("form", { class: "card", "aria-label": "Run a shield" }, field("Shield", shield), field("Role", role), field("Text", text),
    h("button", { type: "submit" }, "Run shield"));

  function showHistory() {
    replace(history, h("h2", {}, "Recent violations (this tab)"),
      recent.length ? h("ul", { class: "list" }, recent.map((r) => h("li", {}, h("strong", {}, r.shield), ` · ${r.level} · `, r.text.slice(0, 120))))
        : h("p", { class: "muted" }, "None yet."));
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(out, h("p", { class: "muted" }, "Running…"));
    try {
      const result = await api("/v1/safety/run-shield", {
        method: "POST",
        body: { shield_id: shield.value, messages: [{ role: role.value, content: text.value }] },
      });
      replace(out, verdict(result));
      if (result.violation) {
        recent.unshift({ shield: shield.value, level: result.violation.violation_level, text: text.value });
        recent.splice(20);
        showHistory();
      }
      announce(result.violation ? "The shield found a violation." : "No violation.");
    } catch (error) {
      replace(out, errorBox(error));
    }
  });
  replace(root, h("h1", {}, "Safety"), h("div", { class: "split" }, form, h("section", { class: "card", "aria-label": "Verdict" }, h("h2", {}, "Verdict"), out)), history);
  showHistory();
  return null;
}
