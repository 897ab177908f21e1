// Building the page from data without ever parsing data as HTML: every text goes in as a text
// node (the console never assigns HTML strings), so a payload, an error message or a key name can
// never become markup or script.

/**
 * h("button", {class: "primary", onclick: f, disabled: true}, "Save", child, …) → an element.
 * Attributes: `class`, `for`, `on<event>` (a listener), booleans (set when true), anything else
 * as an attribute. Children: nodes, strings (text), null/false (skipped), arrays (flattened).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Pretty JSON in a <pre> (text, never markup). */
export function jsonBlock(value, label) {
  return h("pre", { class: "json", tabindex: "0", "aria-label": label || "JSON" }, JSON.stringify(value, null, 2));
}

/** A date as the operator's locale shows it, with the exact UTC time on hover. */
export function when(text) {
  if (!text) return "—";
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) return text;
  return h("time", { datetime: text, title: text }, d.toLocaleString());
}

/** A "loading" line for a region, announced to screen readers. */
export function loading(what) {
  return h("p", { class: "loading", role: "status" }, `Loading ${what}…`);
}

/**
 * What went wrong, as the API said it: status, error code, message, the scope it wanted, and
 * (for an invalid config) nothing more — callers render `errors` at their locations.
 */
export function problem(err, doing, api = "the admin API") {
  const lines = [];
  if (err && err.status) {
    lines.push(h("strong", {}, `${doing} failed: HTTP ${err.status}${err.code ? ` ${err.code}` : ""}`));
    if (err.message) lines.push(h("span", { class: "msg" }, err.message));
    if (err.requiredScope && !(err.message || "").includes(err.requiredScope)) lines.push(h("span", { class: "msg" }, `This key lacks the scope \`${err.requiredScope}\`.`));
    if (err.retryAfter) lines.push(h("span", { class: "msg" }, `The API asks to retry after ${err.retryAfter} s.`));
  } else {
    lines.push(h("strong", {}, `${doing} failed: ${api} could not be reached.`));
    lines.push(h("span", { class: "msg" }, String((err && err.message) || err)));
  }
  return h("div", { class: "problem", role: "alert" }, lines);
}

/** A success note, announced politely. */
export function note(text, kind = "ok") {
  return h("div", { class: `note ${kind}`, role: "status" }, text);
}

/** A table from column headers and rows of cells (each a node, a string or an array). */
export function table(caption, headers, rows, attrs = {}) {
  return h(
    "div",
    // Focusable: a table wider than the page scrolls, and the keyboard must reach it too.
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h(
      "table",
      attrs,
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))) : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "Nothing to show."))),
    ),
  );
}

/** A labelled field: the label's `for` is the control's id. */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2)}`;
  control.id = id;
  let hintEl = null;
  if (hint) {
    hintEl = h("span", { class: "hint", id: `${id}-hint` }, hint);
    control.setAttribute("aria-describedby", hintEl.id);
  }
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl);
}

/** Sets the document title and moves focus to the page's heading (keyboard and screen readers). */
export function titled(heading, title) {
  document.title = `${title} · metastream console`;
  heading.setAttribute("tabindex", "-1");
  queueMicrotask(() => heading.focus({ preventScroll: true }));
  return heading;
}

/** Fills `main` with a page: its heading (which also titles the document), a lead paragraph, then `children`. */
export function showPage(main, title, lead, ...children) {
  replace(main, titled(h("h1", {}, title), title), lead ? h("p", { class: "lead" }, lead) : null, ...children);
}

/** A secret shown once: selectable, copyable, gone when the operator leaves the page. */
export function secretOnce(secret, what) {
  const input = h("input", { type: "text", readonly: true, value: secret, id: "secret-once", spellcheck: "false" });
  return h(
    "div",
    { class: "secret", role: "alert" },
    field(`${what} — shown once`, input, "Copy it now: the API never shows it again, and the console does not keep it."),
    h(
      "div",
      { class: "actions" },
      h(
        "button",
        {
          type: "button",
          onclick: async (e) => {
            input.select();
            try {
              await navigator.clipboard.writeText(secret);
              e.target.textContent = "Copied";
            } catch {
              e.target.textContent = "Selected: press Ctrl+C";
            }
          },
        },
        "Copy",
      ),
      h("button", { type: "button", onclick: (e) => e.target.closest(".secret").remove() }, "I have stored it"),
    ),
  );
}
