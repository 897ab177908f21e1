// Live tail: the events of one source or all, as the post stage publishes them, over the
// consumer-api's SSE stream (GET /stream, another origin: see api.js consumerApi). EventSource
// cannot send a bearer key, so this reads the stream with fetch and a streaming body. Each start
// uses a fresh API group (`console-<random>`, so the key needs `consume:console-*` and `read:`
// scopes: the consumer-api's checks); pausing closes the connection, resuming reconnects with the
// last event's id, which the API resumes right after (nothing missed, nothing twice).

import { consumerApi, session, refusal } from "./api.js";
import { h, replace, problem, field, showPage } from "./dom.js";
import { recordView } from "./entities.js";
import { savedFilters } from "./saved.js";
import { exportBar } from "./export.js";

/** Rows kept on the page: the newest this many. */
const KEEP = 500;

/** The stream running, if any: stopped when the page is left. */
let running = null;
window.addEventListener("hashchange", () => {
  if (running && !location.hash.startsWith("#/tail")) running.abort();
});

/** SSE frames (`id:`, `event:`, `data:` lines; `:` comments) out of text chunks. */
function sseParser(onEvent) {
  let buffer = "";
  return (chunk) => {
    buffer += chunk.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const ev = { id: null, event: "message", data: [] };
      for (const line of frame.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const at = line.indexOf(":");
        const name = at < 0 ? line : line.slice(0, at);
        const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (name === "id") ev.id = value;
        else if (name === "event") ev.event = value;
        else if (name === "data") ev.data.push(value);
      }
      if (ev.data.length) onEvent({ ...ev, data: ev.data.join("\n") });
    }
  };
}

/**
 * `name=value`: the Kafka header an event must carry to be shown (any header of the message —
 * the pipeline's `metastream-*` ones, `traceparent`, the client's routing headers), or null for
 * empty text; throws on text without `=`. The consumer-api matches it, as a `header` condition
 * of the filter: events without it are passed over there, not sent here.
 */
export function headerSearch(text) {
  if (!text) return null;
  const at = text.indexOf("=");
  if (at <= 0) throw new Error(`a header is searched as name=value, not “${text}”`);
  return { name: text.slice(0, at).trim(), value: text.slice(at + 1).trim() };
}

/** The `filter` /stream takes: the source picked, the condition written and the header searched, all that are given. */
export function combinedFilter(source, written, header) {
  const parts = [];
  if (source) parts.push({ source });
  if (written) parts.push(JSON.parse(written));
  if (header) parts.push({ header: { name: header.name, equals: header.value } });
  if (!parts.length) return null;
  return JSON.stringify(parts.length === 1 ? parts[0] : { all: parts });
}

export async function page(main) {
  const source = h("input", { type: "text", name: "source", pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}", spellcheck: "false" });
  const filter = h("input", { type: "text", name: "filter", spellcheck: "false", placeholder: '{"exists": "payload.title"}' });
  const header = h("input", { type: "text", name: "header", spellcheck: "false", placeholder: "metastream-source=jira" });
  const from = h(
    "select",
    { name: "from" },
    h("option", { value: "latest" }, "now"),
    h("option", { value: "earliest" }, "the beginning"),
  );
  const start = h("button", { type: "submit", class: "primary", id: "tail-start" }, "Start");
  const pause = h("button", { type: "button", id: "tail-pause", disabled: true }, "Pause");
  const status = h("p", { id: "tail-status", role: "status" }, "Stopped.");
  const problems = h("div", { id: "tail-problem" });
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No events yet.")));
  const detail = h("div", { id: "tail-detail", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "row card", "aria-label": "Tail settings" },
    field("Source", source, "Exact name; empty: every source the key may read"),
    field("Header", header, "name=value: only messages with this Kafka header"),
    field("Filter", filter, "A condition as /consume's filter= takes it (JSON); empty: none"),
    field("From", from),
    start,
    pause,
  );
  showPage(
    main,
    "Live tail",
    "Events as they are published, from the consumer-api's stream. Needs a key with consume:console-* and read: (or meta:, which leaves payloads out) scopes. Open an event to see its record, provenance, headers and trace id.",
    form,
    savedFilters("tail", { source, header, filter }),
    exportBar("live tail", ["topic", "partition", "offset", "key", "event.source", "event.id", "payload_hidden", ["traceparent", (i) => i.headers && i.headers.traceparent], "event"], () => shown),
    status,
    problems,
    h(
      "div",
      { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Events" },
      h(
        "table",
        { id: "tail-events" },
        h("caption", {}, `Events (the newest ${KEEP} kept)`),
        h("thead", {}, h("tr", {}, ["Published", "Source", "Id", "Partition:offset", "Config versions", "Action"].map((c) => h("th", { scope: "col" }, c)))),
        body,
      ),
    ),
    detail,
  );

  let group = null;
  let lastId = null;
  let count = 0;
  let shown = [];
  let filterText = null;
  let startAt = "latest";

  const show = (item) => {
    const e = item.event || {};
    const p = e.provenance || {};
    if (!count) replace(body);
    count += 1;
    shown.unshift(item);
    shown.length = Math.min(shown.length, KEEP);
    const open = h("button", { type: "button", "aria-label": `Open event ${e.id}` }, "Open");
    open.addEventListener("click", () => {
      replace(
        detail,
        h("h2", {}, `Event ${e.source} / ${e.id}`),
        item.payload_hidden ? h("p", { class: "note warn" }, "Payload hidden: this key may see this source's metadata only (meta:), not its payloads.") : null,
        recordView(e, [["Output topic", item.topic], ["Partition / offset", `${item.partition} / ${item.offset}`], ["Kafka key", item.key || "—"]], item.headers),
      );
      detail.querySelector("h2").scrollIntoView({ block: "nearest" });
    });
    body.prepend(
      h(
        "tr",
        { "data-event-id": e.id },
        h("td", {}, new Date().toLocaleTimeString()),
        h("td", {}, e.source || "—"),
        h("td", { class: "wrap" }, e.id || "—"),
        h("td", {}, `${item.partition}:${item.offset}`),
        h("td", {}, `pre ${p.pre_config_version ?? "—"} · post ${p.post_config_version ?? "—"}`),
        h("td", {}, open),
      ),
    );
    while (body.children.length > KEEP) body.lastElementChild.remove();
  };

  const connect = async () => {
    const base = await consumerApi();
    if (!base) {
      replace(problems, h("div", { class: "problem", role: "alert" }, "The gateway has no gateway.console.consumer_api_url: the console does not know where the consumer-api is."));
      return;
    }
    const q = new URLSearchParams({ group, headers: "true" });
    if (filterText) q.set("filter", filterText);
    // Resuming: the last event's id, and no `from` (the consumer-api today fails a resume that
    // also names where to start: an endless `unavailable` from Kafka).
    if (lastId) q.set("last_event_id", lastId);
    else q.set("from", startAt);
    const controller = new AbortController();
    running = controller;
    pause.disabled = false;
    start.textContent = "Restart";
    replace(status, "Connecting…");
    try {
      const res = await fetch(`${base}/stream?${q}`, {
        headers: { Accept: "text/event-stream", Authorization: `Bearer ${session.key()}` },
        credentials: "omit",
        cache: "no-store",
        signal: controller.signal,
      });
      if (!res.ok) throw await refusal(res);
      replace(status, `Live: group ${group}${filterText ? `, filter ${filterText}` : ""}.`);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const feed = sseParser((ev) => {
        if (ev.event === "error") {
          const err = JSON.parse(ev.data);
          replace(problems, h("div", { class: "problem", role: "alert" }, h("strong", {}, `The stream reported ${err.error}: `), err.message));
          return;
        }
        lastId = ev.id || lastId;
        show(JSON.parse(ev.data));
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed(value);
      }
      replace(status, "The stream ended. Start again to resume.");
    } catch (err) {
      if (controller.signal.aborted) return;
      replace(status, "Stopped.");
      replace(problems, problem(err, "The live tail", "the consumer-api"));
    } finally {
      if (running === controller) running = null;
      // Paused: Resume stays offered. Ended or failed: there is nothing to resume.
      if (!controller.signal.aborted) {
        pause.disabled = true;
        pause.textContent = "Pause";
        start.textContent = "Start";
      }
    }
  };

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    replace(problems);
    if (running) running.abort();
    pause.textContent = "Pause";
    try {
      filterText = combinedFilter(source.value.trim(), filter.value.trim(), headerSearch(header.value.trim()));
    } catch (err) {
      replace(problems, h("div", { class: "problem", role: "alert" }, h("strong", {}, "The filter is not valid: "), err.message));
      return;
    }
    const rand = new Uint8Array(6);
    crypto.getRandomValues(rand);
    group = `console-${Array.from(rand, (b) => b.toString(16).padStart(2, "0")).join("")}`;
    lastId = null;
    startAt = from.value;
    count = 0;
    shown = [];
    replace(body, h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No events yet.")));
    replace(detail);
    connect();
  });
  pause.addEventListener("click", () => {
    if (running) {
      running.abort();
      running = null;
      pause.textContent = "Resume";
      replace(status, `Paused after ${count} event${count === 1 ? "" : "s"}: resuming continues right after the last one shown, nothing missed.`);
    } else {
      pause.textContent = "Pause";
      connect();
    }
  });
}
