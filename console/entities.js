// Entity lookup: a source and an id, and the processed record the consumer-api stores for them
// (GET /metadata/{source}/{id} on the consumer-api, another origin: see api.js consumerApi),
// with its provenance and trace id. Needs a key with `read:<source>` — the consumer-api's scope.

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
    "The processed record the consumer-api stores for a source and an id, with where it came from. The consumer-api checks the key's read:<source> scope.",
    form,
    result,
  );
  const lookUp = async () => {
    replace(result, h("p", { class: "loading", role: "status" }, "Looking up…"));
    try {
      const base = await consumerApi();
      if (!base) return replace(result, h("div", { class: "problem", role: "alert" }, NOT_SET));
      const path = `/metadata/${encodeURIComponent(source.value)}/${encodeURIComponent(id.value)}`;
      const { body } = await call("GET", base + path);
      replace(result, h("h2", {}, `${source.value} / ${id.value}`), recordView(body));
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
