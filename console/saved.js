// Saved filters: what a view's filter fields hold, kept under a name in this browser
// (localStorage; a filter is a display preference, never a secret), picked again from a list.

import { h, replace, field } from "./dom.js";

const storeKey = (view) => `metastream.console.filters.${view}`;

function load(view) {
  try {
    const saved = JSON.parse(localStorage.getItem(storeKey(view)) || "{}");
    return saved && typeof saved === "object" && !Array.isArray(saved) ? saved : {};
  } catch {
    return {};
  }
}

/**
 * The saved filters of `view` over its `fields` ({name: input or select}): a list to pick one
 * (its values put back into the fields, then `applied()`), a button to save the fields' values
 * under a name, and one to delete the one picked.
 */
export function savedFilters(view, fields, applied = () => {}) {
  const current = () => Object.fromEntries(Object.entries(fields).map(([k, el]) => [k, el.value]));
  const apply = (values) => {
    for (const [k, el] of Object.entries(fields)) el.value = values[k] || "";
    applied();
  };
  const pick = h("select", { name: `${view}-saved`, id: `${view}-saved` });
  const said = h("span", { class: "hint", role: "status" });
  const refill = (selected = "") => {
    const names = Object.keys(load(view)).sort();
    replace(pick, h("option", { value: "" }, names.length ? "— pick one —" : "— none saved —"), names.map((n) => h("option", { value: n, selected: n === selected }, n)));
  };
  pick.addEventListener("change", () => {
    const values = load(view)[pick.value];
    if (values) {
      apply(values);
      replace(said, `Filter “${pick.value}” applied.`);
    }
  });
  const named = h("input", { type: "text", name: `${view}-filter-name`, spellcheck: "false", maxlength: 64 });
  const save = h("button", { type: "button", id: `${view}-save-filter` }, "Save filter");
  save.addEventListener("click", () => {
    const name = named.value.trim();
    if (!name) {
      replace(said, "Name the filter first.");
      named.focus();
      return;
    }
    const all = load(view);
    all[name] = current();
    localStorage.setItem(storeKey(view), JSON.stringify(all));
    refill(name);
    replace(said, `Saved as “${name}” in this browser.`);
  });
  const remove = h("button", { type: "button", id: `${view}-delete-filter` }, "Delete saved");
  remove.addEventListener("click", () => {
    if (!pick.value) return;
    const all = load(view);
    const name = pick.value;
    delete all[name];
    localStorage.setItem(storeKey(view), JSON.stringify(all));
    refill();
    replace(said, `Deleted “${name}”.`);
  });
  refill();
  return h("div", { class: "row saved-filters" }, field("Saved filters", pick), remove, field("Save the fields above as", named), save, said);
}
