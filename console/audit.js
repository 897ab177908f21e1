// The audit trail: every admin action (keys, sources, replays), newest first. The API pages
// oldest first from a cursor (`<partition>:<offset>`; the audit topic has one partition): the
// console finds where the trail ends (a cursor past the end answers nothing, so a binary search
// with one-record pages finds it) and reads the last NEWEST records from there.

import { exportBar } from "./export.js";
import { get, query } from "./api.js";
import { h, replace, loading, problem, table, when, jsonBlock, showPage } from "./dom.js";

const PAGE = 1000;
const NEWEST = 2000;

/** Whether any record sits at or after `offset` (partition 0). */
const anyFrom = async (offset) => (await get(`/v1/audit${query({ limit: 1, cursor: `0:${offset}` })}`)).count > 0;

/** The offset after the last record: the first offset from which nothing is left. */
async function end() {
  let lo = 0;
  let hi = 1024;
  if (!(await anyFrom(0))) return 0;
  while (await anyFrom(hi)) {
    lo = hi;
    hi *= 2;
  }
  // anyFrom(lo) is true, anyFrom(hi) false.
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await anyFrom(mid)) lo = mid;
    else hi = mid;
  }
  return hi;
}

export async function page(main) {
  const filter = h("input", { type: "search", name: "filter", spellcheck: "false" });
  const region = h("div", {}, loading("the audit trail"));
  const refresh = h("button", { type: "button" }, "Refresh");
  showPage(
    main,
    "Audit trail",
    "Every admin action — keys created, changed, rotated or revoked; source configs stored or deleted; dead letters replayed — with who did it.",
    h("div", { class: "row card" }, h("div", { class: "field" }, h("label", { for: "audit-filter" }, "Filter (action, actor or target contains)"), filter), refresh),
    region,
  );
  filter.id = "audit-filter";
  let records = [];
  let truncated = false;
  let loaded = false;

  let matched = [];
  const exporter = exportBar("audit trail", ["at", "action", "target", "actor", "actor_name", "details"], () => matched);

  const render = () => {
    const q = filter.value.trim().toLowerCase();
    // Shown: the newest 500 matches; exported: every match loaded.
    matched = records.filter((r) => !q || [r.action, r.actor, r.actor_name, r.target].some((x) => (x || "").toLowerCase().includes(q)));
    const shown = matched.slice(0, 500);
    replace(
      region,
      exporter,
      truncated ? h("p", { class: "note" }, `The newest ${records.length} records; older ones: GET /v1/audit or \`metastream audit\`.`) : null,
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
    loaded = false;
    records = [];
    truncated = false;
    try {
      const from = Math.max(0, (await end()) - NEWEST);
      truncated = from > 0;
      let cursor = `0:${from}`;
      for (;;) {
        const body = await get(`/v1/audit${query({ limit: PAGE, cursor })}`);
        records = records.concat(body.records);
        if (body.count < PAGE || records.length >= NEWEST) break;
        cursor = body.next_cursor;
      }
      records.reverse();
      loaded = true;
      render();
    } catch (err) {
      replace(region, problem(err, "Loading the audit trail"));
    }
  };
  // While loading, the region says so; the filter applies once the records are there.
  filter.addEventListener("input", () => loaded && render());
  refresh.addEventListener("click", load);
  load();
}
