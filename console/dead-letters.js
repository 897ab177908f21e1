// Dead letters: what the stages could not process, by reason, stage and source, each with its
// error and original message; replay one, a selection, or all matching a filter, and the
// result of each.

import { exportBar } from "./export.js";
import { call, get, session, query } from "./api.js";
import { h, replace, jsonBlock, loading, problem, note, field, showPage } from "./dom.js";
import { savedFilters } from "./saved.js";

/** What a key is shown of a dead letter's message (the API's `payload_shown`). */
function message(d, id) {
  if (d.payload_shown === "hidden") return h("span", { class: "hint" }, "Hidden: this key may see this source's metadata only (meta:).");
  return h(
    "details",
    {},
    h("summary", {}, d.payload_shown === "masked" ? "Original message (masked)" : "Original message"),
    d.payload_shown === "masked" ? h("p", { class: "hint" }, "Fields the source's mask_field and classify operations hide are shown as ****.") : null,
    d.reference ? h("p", {}, "Too large to keep whole: a reference.") : null,
    jsonBlock(d.payload, `Original message of ${id}`),
  );
}

/** The reasons, from the admin listener's own OpenAPI document (the enum is the contract). */
async function reasons() {
  try {
    const doc = await (await fetch("/openapi.json", { credentials: "omit" })).json();
    return doc.components.schemas.DeadLetterReason.enum || [];
  } catch {
    return [];
  }
}

export async function page(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const source = h("input", { type: "text", name: "source", value: params.get("source") || "", spellcheck: "false" });
  const reason = h("select", { name: "reason" }, h("option", { value: "" }, "any"));
  const stage = h("select", { name: "stage" }, h("option", { value: "" }, "any"), h("option", { value: "pre" }, "pre"), h("option", { value: "post" }, "post"));
  const force = h("input", { type: "checkbox", name: "force" });
  const canWrite = session.canWrite();
  const filters = h(
    "form",
    { class: "row card", "aria-label": "Filter dead letters" },
    field("Source", source, "Exact name; empty: every source"),
    field("Reason", reason),
    field("Stage", stage),
    h("button", { type: "submit", class: "primary", id: "dl-load" }, "Show"),
  );
  const summary = h("div", { id: "dl-summary" });
  const region = h("div", { id: "dl-table" });
  const results = h("div", { id: "dl-results", class: "results", "aria-live": "polite" });
  const replaySelected = h("button", { type: "button", id: "dl-replay-selected", disabled: true }, "Replay selected");
  const replayAll = h("button", { type: "button", id: "dl-replay-all", disabled: true }, "Replay all matching the filter");
  const more = h("button", { type: "button", id: "dl-more", hidden: true }, "Load more");
  let shown = [];
  const exporter = exportBar(
    "dead letters",
    [
      "partition", "offset", "source", "event_id", "stage", "reason", "operation",
      "operation_index", "error", "original.topic", "original.partition", "original.offset",
      "reference", "payload",
    ],
    () => shown,
  );


  showPage(
    main,
    "Dead letters",
    "Messages a stage could not process, oldest first. Fix the source's configuration, then replay: each goes back to the topic it came from, unchanged (same id), once unless forced.",
    filters,
    savedFilters("dead-letters", { source, reason, stage }, () => filters.requestSubmit()),
    summary,
    h(
      "div",
      { class: "actions" },
      replaySelected,
      replayAll,
      h("label", {}, force, " Force (replay even if already replayed)"),
      more,
    ),
    exporter,
    results,
    region,
  );
  for (const r of await reasons()) reason.append(h("option", { value: r, selected: r === params.get("reason") }, r));

  let rows = [];
  let cursor = "";
  const selected = new Map();

  const render = () => {
    shown = rows.filter((d) => !stage.value || d.stage === stage.value);
    const count = (key) => {
      const m = new Map();
      for (const d of shown) m.set(d[key], (m.get(d[key]) || 0) + 1);
      return [...m.entries()].map(([k, n]) => h("span", { class: "badge" }, `${k}: ${n}`));
    };
    replace(
      summary,
      shown.length
        ? h("div", { class: "card" }, h("div", { class: "chips" }, h("strong", {}, `${shown.length} shown · by reason`), count("reason")), h("div", { class: "chips" }, h("strong", {}, "by stage"), count("stage")), h("div", { class: "chips" }, h("strong", {}, "by source"), count("source")))
        : null,
    );
    const head = ["", "Source", "Event id", "Stage", "Reason", "Operation", "Error", "Original", "Message", ""];
    const body = shown.map((d) => {
      const id = `${d.partition}:${d.offset}`;
      const box = h("input", {
        type: "checkbox",
        "aria-label": `Select dead letter ${id} (event ${d.event_id || "?"})`,
        checked: selected.has(id),
        disabled: !canWrite,
        onchange: (e) => {
          if (e.target.checked) selected.set(id, { partition: d.partition, offset: d.offset });
          else selected.delete(id);
          replaySelected.disabled = !canWrite || selected.size === 0;
          replaySelected.textContent = `Replay selected (${selected.size})`;
        },
      });
      return h(
        "tr",
        { "data-dead-letter": id },
        h("td", {}, box),
        h("td", {}, d.source || "—"),
        h("td", { class: "wrap" }, d.event_id || "—"),
        h("td", {}, d.stage),
        h("td", {}, d.reason),
        h("td", {}, d.operation ? `${d.operation}${d.operation_index !== undefined && d.operation_index !== null ? ` [${d.operation_index}]` : ""}` : "—"),
        h("td", { class: "wrap" }, d.error),
        h("td", {}, d.original ? `${d.original.topic} ${d.original.partition}:${d.original.offset}` : "—"),
        h("td", {}, message(d, id)),
        h("td", {}, h("button", { type: "button", disabled: !canWrite, onclick: () => replay({ items: [{ partition: d.partition, offset: d.offset }] }, `dead letter ${id}`) }, "Replay")),
      );
    });
    replace(
      region,
      h(
        "div",
        { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Dead letters" },
        h(
          "table",
          { id: "dead-letters" },
          h("caption", {}, `Dead letters${source.value ? ` of ${source.value}` : ""}${reason.value ? `, ${reason.value}` : ""}${stage.value ? `, stage ${stage.value}` : ""}`),
          h("thead", {}, h("tr", {}, head.map((c, i) => h("th", { scope: "col" }, c || (i === 0 ? h("span", { class: "sr" }, "Select") : "Action"))))),
          h("tbody", {}, body.length ? body : h("tr", {}, h("td", { colspan: head.length, class: "empty" }, "No dead letters match."))),
        ),
      ),
    );
    replayAll.disabled = !canWrite || !source.value;
    replayAll.title = source.value ? "" : "The API replays by filter per source: name one.";
  };

  const load = async (append) => {
    if (!append) {
      rows = [];
      cursor = "";
      selected.clear();
      replaySelected.disabled = true;
      replaySelected.textContent = "Replay selected";
      replace(region, loading("dead letters"));
    }
    try {
      const body = await get(`/v1/dead-letters${query({ source: source.value, reason: reason.value, limit: 500, cursor })}`);
      rows = rows.concat(body.dead_letters);
      more.hidden = body.count < 500;
      cursor = body.next_cursor;
      render();
    } catch (err) {
      replace(region, problem(err, "Loading dead letters"));
    }
  };

  // The API replays at most a page per call and says where to go on (`next_cursor`) until it
  // is `complete`; so many calls at most from one click.
  const MAX_CALLS = 50;

  // Each asked-for item ends in one of three places: replayed (where to), skipped (why), or
  // not found (the API names neither).
  const replay = async (request, what) => {
    replace(results, h("p", { class: "loading", role: "status" }, `Replaying ${what}…`));
    try {
      const replayed = [];
      const skipped = [];
      let body = { ...request, force: force.checked };
      let complete = false;
      for (let calls = 0; !complete && calls < MAX_CALLS; calls++) {
        const res = await call("POST", "/v1/dead-letters/replay", { body });
        replayed.push(...res.body.replayed);
        skipped.push(...res.body.skipped);
        complete = res.body.complete;
        body = { ...body, cursor: res.body.next_cursor };
        if (!complete) replace(results, h("p", { class: "loading", role: "status" }, `Replaying ${what}… ${replayed.length} so far`));
      }
      const named = new Set([...replayed, ...skipped].map((r) => `${r.partition}:${r.offset}`));
      const missing = complete ? (request.items || []).filter((i) => !named.has(`${i.partition}:${i.offset}`)) : [];
      const rest = complete ? "" : ` Stopped after ${MAX_CALLS} calls; more may match: replay again to go on (those replayed are skipped).`;
      replace(
        results,
        note(`Replayed ${replayed.length}, skipped ${skipped.length}${missing.length ? `, not found ${missing.length}` : ""} (${what}).${rest}`, skipped.length || missing.length || !complete ? "warn" : "ok"),
        h(
          "ul",
          { id: "replay-results" },
          replayed.map((r) => h("li", { "data-result": "replayed" }, h("span", { class: "badge replayed" }, "replayed"), ` ${r.partition}:${r.offset} → ${r.to.topic} ${r.to.partition}:${r.to.offset}`)),
          skipped.map((r) => h("li", { "data-result": "skipped" }, h("span", { class: "badge skipped" }, "skipped"), ` ${r.partition}:${r.offset}: ${r.why}`)),
          missing.map((r) => h("li", { "data-result": "missing" }, h("span", { class: "badge skipped" }, "not found"), ` ${r.partition}:${r.offset}: no such dead letter`)),
        ),
      );
    } catch (err) {
      replace(results, problem(err, `Replaying ${what}`));
    }
  };

  filters.addEventListener("submit", (e) => {
    e.preventDefault();
    history.replaceState(null, "", `#/dead-letters${query({ source: source.value, reason: reason.value })}`);
    load(false);
  });
  stage.addEventListener("change", render);
  more.addEventListener("click", () => load(true));
  replaySelected.addEventListener("click", () => replay({ items: [...selected.values()] }, `${selected.size} selected`));
  replayAll.addEventListener("click", () => {
    if (!source.value) return;
    const what = `every dead letter of ${source.value}${reason.value ? ` with reason ${reason.value}` : ""}`;
    if (confirm(`Replay ${what}?`)) replay({ source: source.value, ...(reason.value ? { reason: reason.value } : {}) }, what);
  });
  load(false);
}
