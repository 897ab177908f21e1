// The audit trail: every admin action (keys, sources, replays), newest first. The API pages
// oldest first; the console reads pages up to a bound and shows the newest of what it read.

import { get, query } from "./api.js";
import { h, replace, loading, problem, table, when, titled, jsonBlock } from "./dom.js";

const PAGE = 1000;
const MAX_PAGES = 20;

export async function page(main) {
  const filter = h("input", { type: "search", name: "filter", spellcheck: "false" });
  const region = h("div", {}, loading("the audit trail"));
  const refresh = h("button", { type: "button" }, "Refresh");
  replace(
    main,
    titled(h("h1", {}, "Audit trail"), "Audit trail"),
    h("p", { class: "lead" }, "Every admin action — keys created, changed, rotated or revoked; source configs stored or deleted; dead letters replayed — with who did it."),
    h("div", { class: "row card" }, h("div", { class: "field" }, h("label", { for: "audit-filter" }, "Filter (action, actor or target contains)"), filter), refresh),
    region,
  );
  filter.id = "audit-filter";
  let records = [];
  let truncated = false;

  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = records.filter((r) => !q || [r.action, r.actor, r.actor_name, r.target].some((x) => (x || "").toLowerCase().includes(q))).slice(0, 500);
    replace(
      region,
      truncated ? h("p", { class: "note warn" }, `Showing the newest of the first ${records.length} records read.`) : null,
      table(
        `${shown.length} of ${records.length} records, newest first`,
        ["When", "Action", "Target", "Actor", "Details"],
        shown.map((r) => [when(r.at), h("code", {}, r.action), h("span", { class: "wrap" }, r.target), h("span", {}, r.actor_name, h("div", { class: "hint" }, r.actor)), Object.keys(r.details || {}).length ? h("details", {}, h("summary", {}, "Details"), jsonBlock(r.details, "Details")) : "—"]),
        { id: "audit" },
      ),
    );
  };

  const load = async () => {
    replace(region, loading("the audit trail"));
    records = [];
    truncated = false;
    try {
      let cursor = "";
      for (let n = 0; n < MAX_PAGES; n++) {
        const body = await get(`/v1/audit${query({ limit: PAGE, cursor })}`);
        records = records.concat(body.records);
        if (body.count < PAGE) break;
        cursor = body.next_cursor;
        if (n === MAX_PAGES - 1) truncated = true;
      }
      records.reverse();
      render();
    } catch (err) {
      replace(region, problem(err, "Loading the audit trail"));
    }
  };
  filter.addEventListener("input", render);
  refresh.addEventListener("click", load);
  load();
}
