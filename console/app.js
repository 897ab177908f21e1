// The console's entry: the key prompt, the theme, and a hash router over the pages
// (#/health, #/sources, #/sources/<name>, #/dead-letters, #/subscriptions, #/keys, #/audit, #/entities,
// #/tail).

import { session, probe, ApiError } from "./api.js";
import { h, replace, problem, field, showPage } from "./dom.js";
import * as sources from "./sources.js";
import * as deadLetters from "./dead-letters.js";
import * as keys from "./keys.js";
import * as subscriptions from "./subscriptions.js";
import * as audit from "./audit.js";
import * as entities from "./entities.js";
import * as tail from "./tail.js";
import * as health from "./health.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const banner = document.getElementById("banner");
const logout = document.getElementById("logout");
const themeButton = document.getElementById("theme");

// Theme: follows the system (prefers-color-scheme) unless the operator picks one; the pick is a
// display preference, kept in localStorage (the key never is).
const THEMES = ["auto", "light", "dark"];
function applyTheme(theme) {
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  themeButton.textContent = `Theme: ${theme}`;
  themeButton.setAttribute("aria-label", `Colour theme: ${theme}. Change theme`);
}
applyTheme(localStorage.getItem("metastream.console.theme") || "auto");
themeButton.addEventListener("click", () => {
  const now = localStorage.getItem("metastream.console.theme") || "auto";
  const next = THEMES[(THEMES.indexOf(now) + 1) % THEMES.length];
  localStorage.setItem("metastream.console.theme", next);
  applyTheme(next);
});

// The skip link moves focus to the page's content without touching the hash (the router's).
document.querySelector(".skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});

logout.addEventListener("click", () => {
  session.clear();
  location.hash = "";
  render();
});

const ROUTES = [
  [/^#\/health\/?$/, () => health.page(main)],
  [/^#\/sources\/([^/]+)$/, (m) => sources.editor(main, decodeURIComponent(m[1]))],
  [/^#\/sources\/?$/, () => sources.list(main)],
  [/^#\/dead-letters\/?(\?.*)?$/, () => deadLetters.page(main)],
  [/^#\/subscriptions\/?$/, () => subscriptions.page(main)],
  [/^#\/keys\/?$/, () => keys.page(main)],
  [/^#\/audit\/?$/, () => audit.page(main)],
  [/^#\/entities\/?(\?.*)?$/, () => entities.page(main)],
  [/^#\/tail\/?$/, () => tail.page(main)],
];

function showSession() {
  const signedIn = Boolean(session.key());
  nav.hidden = !signedIn;
  logout.hidden = !signedIn;
  who.hidden = !signedIn;
  replace(banner);
  if (!signedIn) return;
  if (session.canWrite()) {
    replace(who, "Key: admin");
  } else {
    replace(who, "Key: read-only");
    replace(
      banner,
      h(
        "div",
        { class: "readonly" },
        h("strong", {}, "Read-only. "),
        "This key lacks the ",
        h("code", {}, "admin"),
        " scope: the API shows it the sources and dead letters its ",
        h("code", {}, "read:"),
        " scopes cover, previews edits, and refuses every change, keys, subscriptions and the audit trail. Actions that change are disabled; what the API answers is shown as it said it.",
      ),
    );
  }
}

function markNav() {
  for (const a of nav.querySelectorAll("a")) {
    const here = location.hash.startsWith(a.getAttribute("href"));
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function render() {
  showSession();
  if (!session.key()) return loginPage();
  if (!location.hash || location.hash === "#" || location.hash === "#/") {
    location.replace("#/health");
    return;
  }
  markNav();
  const route = ROUTES.find(([re]) => re.test(location.hash));
  if (!route) {
    showPage(main, "Not found", null, h("p", {}, `No console page at ${location.hash}.`));
    return;
  }
  route[1](location.hash.match(route[0]));
}

function loginPage() {
  const input = h("input", { type: "password", name: "key", autocomplete: "off", required: true, spellcheck: "false" });
  const status = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary" }, "Open the console");
  const form = h(
    "form",
    { class: "login card", "aria-describedby": "login-why" },
    field("API key", input, "An admin key (dev: dev-admin-key), or any other key to look read-only. Kept for this browser tab only."),
    submit,
    status,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    submit.disabled = true;
    replace(status, h("p", { class: "loading", role: "status" }, "Checking the key with the admin API…"));
    try {
      const access = await probe(key);
      session.set(key, access);
      input.value = "";
      if (!location.hash || location.hash === "#") location.hash = "#/health";
      render();
    } catch (err) {
      submit.disabled = false;
      replace(status, problem(err, err instanceof ApiError && err.status === 401 ? "Signing in" : "Checking the key"));
      input.focus();
    }
  });
  replace(
    main,
    h("h1", {}, "Sign in"),
    h("p", { id: "login-why" }, "The console calls the gateway's admin API with your key as a bearer token. No cookie is set; closing the tab forgets the key."),
    form,
  );
  document.title = "Sign in · metastream console";
  input.focus();
}

window.addEventListener("hashchange", render);
render();
