// Export of what a table shows, as JSON (the records as the API gave them) or CSV (the table's
// columns): built in the browser from the rows the page holds — no server call, nothing the page
// did not already have — bounded to MAX rows, and downloaded as a file.

import { h, replace } from "./dom.js";

/** The most rows one export holds. */
export const MAX = 5000;

/** A CSV cell (RFC 4180): quoted when needed; a leading = + - @ is defused for spreadsheets. */
function cell(value) {
  let text = value === undefined || value === null ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * A column: a field's path in the record ("original.topic", headed "original_topic"), or
 * [header, row => value] where the value is computed.
 */
function column(spec) {
  if (Array.isArray(spec)) return spec;
  const path = spec.split(".");
  return [path.join("_"), (row) => path.reduce((v, name) => (v === null || v === undefined ? v : v[name]), row)];
}

/** CSV of `rows` under `columns` (see `column`). */
export function toCsv(specs, rows) {
  const columns = specs.map(column);
  const lines = [columns.map(([name]) => cell(name)).join(",")];
  for (const r of rows) lines.push(columns.map(([, get]) => cell(get(r))).join(","));
  return `${lines.join("\r\n")}\r\n`;
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * "Export JSON" and "Export CSV" buttons for the rows `rows()` returns when clicked (what the
 * table shows then), named `what` in the file name and the buttons' labels.
 */
export function exportBar(what, columns, rows) {
  const said = h("span", { class: "hint", role: "status" });
  const run = (kind) => {
    const all = rows();
    const taken = all.slice(0, MAX);
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const file = `metastream-${what.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}-${stamp}.${kind}`;
    if (kind === "json") download(file, "application/json", `${JSON.stringify(taken, null, 2)}\n`);
    else download(file, "text/csv;charset=utf-8", toCsv(columns, taken));
    replace(said, `Exported ${taken.length}${all.length > taken.length ? ` of ${all.length} (at most ${MAX})` : ""} row${taken.length === 1 ? "" : "s"} as ${kind.toUpperCase()}: ${file}`);
  };
  return h(
    "div",
    { class: "actions export" },
    h("button", { type: "button", onclick: () => run("json"), "aria-label": `Export JSON of ${what}` }, "Export JSON"),
    h("button", { type: "button", onclick: () => run("csv"), "aria-label": `Export CSV of ${what}` }, "Export CSV"),
    said,
  );
}
