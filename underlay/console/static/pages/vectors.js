// Vector stores and files: create a store, upload files (progress, then ingestion status), browse a
// file's chunks, and search it three ways (vector, keyword, hybrid) side by side with scores.

import { api, uploadFile } from "../api.js";
import { announce, errorBox, field, fmtBytes, fmtTime, h, replace } from "../dom.js";

const MODES = ["vector", "keyword", "hybrid"];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function fileNames() {
  const names = new Map();
  try {
    const files = await api("/v1/files", { query: { limit: 10000 } });
    for (const f of files.data) names.set(f.id, f.filename);
  } catch {
    // names are a nicety; ids still show
  }
  return names;
}

function storeList(stores, current) {
  return h("ul", { class: "list", "aria-label": "Vector stores" },
    stores.map((s) => h("li", {},
      h("a", { href: `#/vectors/${encodeURIComponent(s.id)}`, "aria-current": s.id === current ? "page" : null },
        h("strong", {}, s.name || "(unnamed)"), h("br"), h("small", { class: "muted" }, `${s.id} · ${s.file_counts?.completed ?? 0} files`)))));
}

export async function render(root, params, { signal } = {}) {
  let alive = true;
  const current = params[0] || null;
  const stores = await api("/v1/vector_stores", { query: { limit: 100 }, signal });
  const name = h("input", { name: "store-name", required: true, maxlength: 256, placeholder: "docs" });
  const create = h("form", { class: "row", "aria-label": "Create a vector store" }, field("New store name", name), h("button", { type: "submit" }, "Create"));
  create.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const store = await api("/v1/vector_stores", { method: "POST", body: { name: name.value.trim() } });
      announce(`Created ${store.name}.`);
      location.hash = `#/vectors/${encodeURIComponent(store.id)}`;
    } catch (error) {
      create.append(errorBox(error));
    }
  });
  const side = h("aside", { class: "card" }, h("h2", {}, "Stores"), create,
    stores.data.length ? storeList(stores.data, current) : h("p", { class: "muted" }, "No vector stores yet."));
  const main = h("section", { class: "detail", "aria-label": "Store" });
  replace(root, h("h1", {}, "Vector stores & files"), h("div", { class: "split" }, side, main));
  if (!current) {
    main.append(h("p", { class: "muted" }, "Pick or create a store."));
    return () => (alive = false);
  }
  let store;
  try {
    store = await api(`/v1/vector_stores/${encodeURIComponent(current)}`, { signal });
  } catch (error) {
    main.append(errorBox(error));
    return () => (alive = false);
  }
  const names = await fileNames();

  // --- upload -------------------------------------------------------------------------------
  const picker = h("input", { type: "file", multiple: true, id: "upload-input", class: "visually-hidden" });
  const drop = h("div", { class: "drop", tabindex: 0, role: "button", "aria-label": "Upload files: drop them here or press Enter to choose" },
    "Drop files here, or ", h("label", { for: "upload-input", class: "link" }, "choose files"), picker);
  const uploads = h("ul", { class: "uploads", "aria-live": "polite", "aria-label": "Uploads" });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      picker.click();
    }
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    for (const file of e.dataTransfer.files) ingest(file);
  });
  picker.addEventListener("change", () => {
    for (const file of picker.files) ingest(file);
    picker.value = "";
  });

  async function ingest(file) {
    const bar = h("progress", { max: 1, value: 0, "aria-label": `Upload of ${file.name}` });
    const status = h("span", { class: "muted" }, "uploading");
    uploads.append(h("li", {}, h("span", {}, `${file.name} (${fmtBytes(file.size)})`), bar, status));
    try {
      const uploaded = await uploadFile(file, "assistants", (p) => (bar.value = p));
      bar.value = 1;
      names.set(uploaded.id, uploaded.filename);
      status.textContent = "ingesting";
      let vsFile = await api(`/v1/vector_stores/${encodeURIComponent(current)}/files`, { method: "POST", body: { file_id: uploaded.id } });
      for (let i = 0; alive && vsFile.status === "in_progress" && i < 600; i++) {
        await sleep(500);
        vsFile = await api(`/v1/vector_stores/${encodeURIComponent(current)}/files/${encodeURIComponent(uploaded.id)}`);
      }
      status.textContent = vsFile.status === "failed" ? `failed: ${vsFile.last_error?.message || "unknown error"}` : vsFile.status;
      status.className = vsFile.status === "completed" ? "ok" : vsFile.status === "failed" ? "bad" : "muted";
      announce(`${file.name}: ${vsFile.status}`);
      await listFiles();
    } catch (error) {
      status.textContent = `failed: ${error.message}`;
      status.className = "bad";
    }
  }

  // --- files and chunks ---------------------------------------------------------------------
  const filesBox = h("div");
  const chunks = h("div", { class: "chunks", "aria-live": "polite" });
  async function showChunks(fileId) {
    replace(chunks, h("p", { class: "muted" }, "Loading chunks…"));
    try {
      const page = await api(`/v1/vector_stores/${encodeURIComponent(current)}/files/${encodeURIComponent(fileId)}/content`);
      replace(chunks, h("h3", {}, `Chunks of ${page.filename} (${page.data.length})`),
        h("ol", { class: "chunk-list" }, page.data.map((c) => h("li", {}, h("pre", { class: "chunk" }, c.text)))));
    } catch (error) {
      replace(chunks, errorBox(error));
    }
  }
  async function listFiles() {
    const files = await api(`/v1/vector_stores/${encodeURIComponent(current)}/files`, { query: { limit: 100 } });
    if (!files.data.length) {
      replace(filesBox, h("p", { class: "muted" }, "No files yet."));
      return;
    }
    replace(filesBox, h("table", {},
      h("caption", { class: "visually-hidden" }, "Files in this store"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "File"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Size"), h("th", { scope: "col" }, "Chunks"))),
      h("tbody", {}, files.data.map((f) => h("tr", {},
        h("td", {}, names.get(f.id) || f.id),
        h("td", { class: f.status === "completed" ? "ok" : f.status === "failed" ? "bad" : "" }, f.status),
        h("td", {}, fmtBytes(f.usage_bytes || 0)),
        h("td", {}, h("button", { type: "button", class: "secondary small", onclick: () => showChunks(f.id) }, "Browse")))))));
  }

  // --- search -------------------------------------------------------------------------------
  const query = h("input", { type: "search", name: "query", required: true, maxlength: 4000, placeholder: "Search this store" });
  const columns = h("div", { class: "columns" });
  const search = h("form", { class: "row", role: "search", "aria-label": "Search this store" }, field("Query", query), h("button", { type: "submit" }, "Search"));
  search.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = query.value.trim();
    if (!text) return;
    const results = await Promise.all(MODES.map((mode) =>
      api(`/v1/vector_stores/${encodeURIComponent(current)}/search`, { method: "POST", body: { query: text, search_mode: mode, max_num_results: 5 } })
        .catch((error) => ({ error }))));
    replace(columns, MODES.map((mode, i) => {
      const r = results[i];
      return h("section", { class: "card result-col", "aria-label": `${mode} results` }, h("h3", {}, mode),
        r.error ? errorBox(r.error) : r.data.length ? h("ol", {}, r.data.map((hit) => h("li", {},
          h("div", {}, h("span", { class: "score" }, hit.score.toFixed(3)), " ", h("strong", {}, hit.filename)),
          h("p", { class: "snippet" }, hit.content.map((c) => c.text).join(" ").slice(0, 400))))) : h("p", { class: "muted" }, "No results."));
    }));
    announce("Search finished.");
  });

  replace(main,
    h("h2", {}, store.name || store.id),
    h("p", { class: "muted" }, `${store.id} · created ${fmtTime(store.created_at)} · ${fmtBytes(store.usage_bytes || 0)}`),
    h("section", { "aria-label": "Upload" }, h("h3", {}, "Upload"), drop, uploads),
    h("section", { "aria-label": "Files" }, h("h3", {}, "Files"), filesBox, chunks),
    h("section", { "aria-label": "Search" }, h("h3", {}, "Search"), search, columns));
  await listFiles();
  return () => (alive = false);
}
