// Entity lookup: a source and an id, the processed record the consumer-api stores for them
// (GET /metadata/{source}/{id} on the consumer-api, another origin: see api.js consumerApi),
// with its provenance and trace id, and its recent history on the output topic
// (GET /metadata/{source}/{id}/history). Needs a key with `read:<source>` — or `meta:<source>`,
// which leaves the payloads out — the consumer-api's scopes.

import { call, consumerApi, ApiError } from "./api.js";
import { h, replace, jsonBlock, problem, field, table, showPage } from "./dom.js";

const NOT_SET = "The gateway has no gateway.console.consumer_api_url: the console does not know where the consumer-api is.";

/**
 * The trace id (W3C `traceparent`) of an event: from its Kafka message's headers when the
 * consumer-api handed them out, else from the routing headers its record carries, if any.
 */
export function traceId(record, headers) {
  const routing = (record && record.routing && record.routing.headers) || [];
  const tp = (headers && headers.traceparent) || (routing.find((p) => Array.isArray(p) && p[0] === "traceparent") || [])[1];
  const parts = tp ? String(tp).split("-") : [];
  return parts.length === 4 ? parts[1] : null;
}

/**
 * A record opened: where it is (`place`: rows of [label, value]), its provenance, trace id, the
 * Kafka message's `headers` when known, and the record itself.
 */
export function recordView(record, place = [], headers = null) {
  const p = (record && record.provenance) || {};
  const show = (v) => (v === undefined || v === null ? "—" : String(v));
  const trace = traceId(record, headers);
  return h(
    "div",
    { class: "record" },
    table(
      "Provenance",
      ["Field", "Value"],
      [
        ...place,
        ["Received at", show(record && record.received_at)],
        ["Ingest partition / offset", `${show(p.ingest_partition)} / ${show(p.ingest_offset)}`],
        ["Pre config version", show(p.pre_config_version)],
        ["Post config version", show(p.post_config_version)],
        ["Trace id", trace ? h("code", { class: "trace-id" }, trace) : "— (the record carries no traceparent)"],
      ],
      { class: "provenance" },
    ),
    headers ? table("Kafka headers", ["Header", "Value"], Object.entries(headers).map(([k, v]) => [h("code", {}, k), h("span", { class: "wrap" }, v)]), { class: "headers" }) : null,
    jsonBlock(record, "The record"),
  );
}

/** The entity's versions on the output topic, newest first, each openable. */
function historyView(past) {
  if (past instanceof Error) return problem(past, "Reading the entity's history", "the consumer-api");
  const detail = h("div", { "aria-live": "polite" });
  const rows = past.events.map((item, i) => {
    const e = item.event || {};
    const p = e.provenance || {};
    const open = h("button", { type: "button", "aria-label": `Open version ${i + 1}` }, "Open");
    open.addEventListener("click", () => replace(detail, h("h3", {}, `Version published at ${item.partition}:${item.offset}`), recordView(e, [["Output topic", item.topic], ["Partition / offset", `${item.partition} / ${item.offset}`]], item.headers)));
    return [String(i + 1), e.received_at || "—", `${item.partition}:${item.offset}`, `pre ${p.pre_config_version ?? "—"} · post ${p.post_config_version ?? "—"}`, traceId(e, item.headers) || "—", open];
  });
  return h(
    "section",
    { "aria-label": "History" },
    h("h2", {}, "History on the output topic"),
    h("p", { class: "hint" }, `Newest first, from the newest ${past.window} messages of each partition${past.complete ? "" : " (not all read in time: older versions may be missing)"}.`),
    table(`${rows.length} version${rows.length === 1 ? "" : "s"}`, ["#", "Received", "Partition:offset", "Config versions", "Trace id", "Action"], rows, { id: "entity-history" }),
    detail,
  );
}

export async function page(main) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const source = h("input", { type: "text", name: "source", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}", value: params.get("source") || "", spellcheck: "false" });
  const id = h("input", { type: "text", name: "id", required: true, value: params.get("id") || "", spellcheck: "false" });
  const result = h("div", { id: "entity-result", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "row card", "aria-label": "Look up an entity" },
    field("Source", source),
    field("Event id", id),
    h("button", { type: "submit", class: "primary" }, "Look up"),
  );
  showPage(
    main,
    "Entities",
    "The processed record the consumer-api stores for a source and an id, with where it came from, and every version of it the pipeline published recently. The consumer-api checks the key's read:<source> (or meta:<source>) scope.",
    form,
    result,
  );
  const lookUp = async () => {
    replace(result, h("p", { class: "loading", role: "status" }, "Looking up…"));
    try {
      const base = await consumerApi();
      if (!base) return replace(result, h("div", { class: "problem", role: "alert" }, NOT_SET));
      const path = `/metadata/${encodeURIComponent(source.value)}/${encodeURIComponent(id.value)}`;
      const [{ body }, past] = await Promise.all([call("GET", base + path), call("GET", `${base}${path}/history`).then((r) => r.body, (e) => e)]);
      replace(
        result,
        h("h2", {}, `${source.value} / ${id.value}`),
        body.payload_hidden ? h("p", { class: "note warn" }, "Payload hidden: this key may see this source's metadata only (meta:).") : null,
        recordView(body),
        historyView(past),
      );
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) replace(result, h("div", { class: "problem", role: "alert" }, h("strong", {}, "Not found (HTTP 404). "), err.message));
      else replace(result, problem(err, "The lookup", "the consumer-api"));
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    history.replaceState(null, "", `#/entities?source=${encodeURIComponent(source.value)}&id=${encodeURIComponent(id.value)}`);
    lookUp();
  });
  if (source.value && id.value) lookUp();
}
