// Entry point: sign-in, hash routing, and the page modules (each loaded on first visit).

import { ApiError, listModels, session } from "./api.js";
import { announce, errorBox, field, h, replace } from "./dom.js";

const PAGES = {
  playground: "./pages/playground.js",
  vectors: "./pages/vectors.js",
  traces: "./pages/traces.js",
  safety: "./pages/safety.js",
  providers: "./pages/providers.js",
  evals: "./pages/evals.js",
  "fine-tuning": "./pages/fine_tuning.js",
};

const view = document.getElementById("view");
/** The page on screen: its own element inside #view, an AbortController for its requests and the
 * cleanup its render returned. A navigation replaces it whole, so a slow answer meant for the page
 * just left lands in a detached element (and its fetches are aborted) instead of on the new page. */
let current = null;
let authRequired = false;
let signingIn = false; // the sign-in form reports its own 401

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const page = parts[0] in PAGES ? parts[0] : "playground";
  return { page, params: parts.slice(1) };
}

function markNav(page) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#/${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function showIdentity() {
  const who = document.getElementById("who");
  const signout = document.getElementById("signout");
  who.textContent = authRequired ? "signed in with an API key" : "auth off";
  document.querySelector(".top nav").hidden = false;
  signout.hidden = !session.key;
}

function leave() {
  if (!current) return;
  const { controller, cleanup } = current;
  current = null;
  controller.abort();
  if (cleanup) cleanup();
}

async function route() {
  leave();
  const { page, params } = parseHash();
  const nav = { controller: new AbortController(), cleanup: null, mount: h("div", { class: "page" }) };
  current = nav;
  markNav(page);
  document.getElementById("status").textContent = ""; // a page's notice ends with the page
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · Underlay console`;
  replace(view, replace(nav.mount, h("p", { class: "muted" }, "Loading…")));
  try {
    const module = await import(PAGES[page]);
    if (current !== nav) return;
    replace(nav.mount);
    const cleanup = (await module.render(nav.mount, params, { signal: nav.controller.signal })) || null;
    if (current === nav) nav.cleanup = cleanup;
    else if (cleanup) cleanup(); // the user left while it rendered: stop whatever it started
  } catch (error) {
    if (current === nav) replace(nav.mount, errorBox(error));
  }
}

function showLogin(message) {
  markNav("");
  document.querySelector(".top nav").hidden = true; // nothing to visit before signing in
  document.getElementById("who").textContent = "";
  document.getElementById("signout").hidden = true;
  const input = h("input", { type: "password", name: "api-key", autocomplete: "off", required: true, spellcheck: "false" });
  const problem = h("div", { "aria-live": "assertive" }, message ? errorBox(new Error(message)) : null);
  const form = h(
    "form",
    { class: "login card", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in"),
    h("p", {}, "This server requires an API key. The console sends it as a Bearer token, so you see exactly what the API shows your key."),
    field("API key", input, "Kept in this browser tab only (sessionStorage)."),
    h("button", { type: "submit" }, "Sign in"),
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    session.set(input.value.trim());
    signingIn = true;
    try {
      await listModels();
      signingIn = false;
      authRequired = true;
      showIdentity();
      announce("Signed in.");
      await route();
    } catch (error) {
      signingIn = false;
      session.clear();
      const text = error instanceof ApiError && error.status === 401 ? "That key was not accepted." : error.message;
      replace(problem, errorBox(new Error(text)));
      input.focus();
    }
  });
  replace(view, form);
  input.focus();
}

async function start() {
  // The skip link moves focus without touching the hash, which is the router's.
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    view.focus();
  });
  document.getElementById("signout").addEventListener("click", () => {
    session.clear();
    leave();
    showLogin();
  });
  window.addEventListener("hashchange", () => {
    if (authRequired && !session.key) return;
    route().then(() => view.focus({ preventScroll: true }));
  });
  // Fetch the first page's module while probing whether the server wants a key: the probe goes with
  // this tab's key if it has one (a reload), and a 401 then means the key is no longer accepted.
  import(PAGES[parseHash().page]).catch(() => null);
  const key = session.key;
  try {
    await listModels();
    authRequired = Boolean(key);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      replace(view, errorBox(error));
      return;
    }
    session.clear();
    authRequired = true;
  }
  // Registered after the probe, whose 401 is expected and not a refused key.
  window.addEventListener("underlay:unauthorized", () => {
    if (!session.key || signingIn) return;
    session.clear();
    leave();
    showLogin("Your key was refused (401); sign in again.");
  });
  if (authRequired && !session.key) {
    showLogin();
    return;
  }
  showIdentity();
  await route();
}

start();
