// Webhook subscriptions: create one (its signing secret shown once), delivery status (lag,
// last success and error, failures in a row), pause and resume, secret rotation, each one's
// dead letters with replay, and export of the list.

import { call, get, session } from "./api.js";
import { h, replace, loading, problem, note, when, secretOnce, jsonBlock, field, showPage } from "./dom.js";
import { exportBar } from "./export.js";

/** The form that creates a subscription; `created(answer)` is called with the API's answer. */
function createForm(canWrite, outcome, created) {
  const url = h("input", { type: "url", name: "url", required: true, spellcheck: "false", placeholder: "https://example.com/hooks/metastream" });
  const description = h("input", { type: "text", name: "description", maxlength: 256 });
  const filter = h("input", { type: "text", name: "filter", spellcheck: "false", placeholder: '{"exists": "metadata.tags"}' });
  const fields = h("input", { type: "text", name: "fields", spellcheck: "false", placeholder: "payload.title,metadata.tags" });
  const from = h("select", { name: "from" }, h("option", { value: "latest" }, "new events"), h("option", { value: "earliest" }, "the beginning"));
  const form = h(
    "form",
    { class: "card", "aria-label": "New subscription" },
    h("div", { class: "row" }, field("URL", url, "Where each event is POSTed, signed (Standard Webhooks)"), field("Description", description)),
    h("div", { class: "row" }, field("Filter", filter, "Optional: a condition as /consume's filter= takes it"), field("Fields", fields, "Optional: a projection"), field("From", from)),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", disabled: !canWrite, id: "sub-create" }, "Create subscription")),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { url: url.value.trim(), from: from.value };
    if (description.value.trim()) body.description = description.value.trim();
    if (fields.value.trim()) body.fields = fields.value.trim();
    try {
      if (filter.value.trim()) body.filter = JSON.parse(filter.value);
    } catch (err) {
      replace(outcome, h("div", { class: "problem", role: "alert" }, h("strong", {}, "The filter is not JSON: "), err.message));
      return;
    }
    try {
      const res = await call("POST", "/v1/subscriptions", { body });
      form.reset();
      replace(outcome, note(`Created ${res.body.id}: deliveries to ${res.body.url} start within a second.`), secretOnce(res.body.secret, `Signing secret of ${res.body.id}`));
      created(res.body);
    } catch (err) {
      replace(outcome, problem(err, "Creating the subscription"));
    }
  });
  return form;
}

export async function page(main) {
  const canWrite = session.canWrite();
  const outcome = h("div", { id: "sub-outcome", "aria-live": "polite" });
  const region = h("div", {}, loading("subscriptions"));
  const refresh = h("button", { type: "button", id: "sub-refresh" }, "Refresh");
  let listed = [];
  showPage(
    main,
    "Webhook subscriptions",
    "Every processed event POSTed to each subscription's URL, signed. Lag counts events not yet delivered, passed over or dead-lettered.",
    createForm(canWrite, outcome, () => load()),
    h("div", { class: "actions" }, refresh),
    exportBar("subscriptions", ["id", "url", "description", "state", "format", "filter", "fields", "status.lag", "status.delivered", "status.consecutive_failures", "status.last_success_at", "status.last_error_at", "status.last_error"], () => listed),
    outcome,
    region,
  );

  const load = async () => {
    try {
      const { subscriptions } = await get("/v1/subscriptions");
      // The list carries no status: one GET each (a handful of subscriptions, at most
      // webhooks.max_subscriptions).
      const full = await Promise.all(subscriptions.map((s) => get(`/v1/subscriptions/${encodeURIComponent(s.id)}`).catch((err) => ({ ...s, statusError: err }))));
      listed = full.map(({ statusError, ...s }) => s);
      const head = ["Subscription", "State", "Lag", "Last success", "Last error", "Failures in a row", "Delivered", "Dead letters", "Actions"];
      replace(
        region,
        h(
          "div",
          { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Subscriptions" },
          h(
            "table",
            { id: "subscriptions" },
            h("caption", {}, `${full.length} subscription${full.length === 1 ? "" : "s"}`),
            h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, full.length ? full.map(row) : h("tr", {}, h("td", { colspan: head.length, class: "empty" }, "No subscriptions."))),
          ),
        ),
      );
    } catch (err) {
      replace(region, problem(err, "Loading the subscriptions"));
    }
  };

  const row = (s) => {
    const st = s.status || {};
    const active = s.state === "active";
    const deadRegion = h("div", {});
    return h(
      "tr",
      { "data-subscription": s.id },
      h("td", { class: "wrap" }, h("div", {}, h("code", {}, s.id)), h("div", {}, s.url), s.description ? h("div", { class: "hint" }, s.description) : null),
      h("td", {}, h("span", { class: `badge ${s.state}` }, s.state), s.disabled_reason ? h("div", { class: "hint" }, s.disabled_reason) : null),
      h("td", {}, s.statusError ? problem(s.statusError, "Status") : st.lag === null || st.lag === undefined ? "unknown" : String(st.lag)),
      h("td", {}, when(st.last_success_at)),
      h("td", { class: "wrap" }, when(st.last_error_at), st.last_error ? h("div", { class: "hint" }, st.last_error) : null),
      h("td", {}, String(st.consecutive_failures ?? "—")),
      h("td", {}, String(st.delivered ?? "—")),
      h("td", {}, `${st.dead_letters_pending ?? "—"} pending`, h("div", {}, h("button", { type: "button", class: "link", onclick: () => deadLetters(s, deadRegion), "aria-label": `Show dead letters of ${s.id}` }, "Show")), deadRegion),
      h(
        "td",
        {},
        h(
          "div",
          { class: "actions" },
          h("button", { type: "button", disabled: !canWrite, onclick: () => setState(s, active ? "disabled" : "active"), "aria-label": `${active ? "Pause" : "Resume"} ${s.id}` }, active ? "Pause" : "Resume"),
          h("button", { type: "button", disabled: !canWrite, onclick: () => rotate(s), "aria-label": `Rotate secret of ${s.id}` }, "Rotate secret"),
        ),
      ),
    );
  };

  const setState = async (s, state) => {
    try {
      await call("PATCH", `/v1/subscriptions/${encodeURIComponent(s.id)}`, { body: { state } });
      replace(outcome, note(`${s.id} is now ${state === "active" ? "active: delivery resumes where it stopped" : "paused (disabled)"}.`));
      load();
    } catch (err) {
      replace(outcome, problem(err, `Changing ${s.id}`));
    }
  };

  const rotate = async (s) => {
    if (!confirm(`Rotate the signing secret of ${s.id}? Deliveries carry both signatures for the overlap period.`)) return;
    try {
      const res = await call("POST", `/v1/subscriptions/${encodeURIComponent(s.id)}/rotate-secret`);
      replace(outcome, note(`Rotated: the previous secret is honoured until ${res.body.previous_secret_until || "—"}.`), secretOnce(res.body.secret, `Signing secret of ${s.id}`));
    } catch (err) {
      replace(outcome, problem(err, `Rotating the secret of ${s.id}`));
    }
  };

  const deadLetters = async (s, into) => {
    replace(into, loading("dead letters"));
    try {
      const body = await get(`/v1/subscriptions/${encodeURIComponent(s.id)}/dead-letters`);
      const replay = async (ids) => {
        try {
          const res = await call("POST", `/v1/subscriptions/${encodeURIComponent(s.id)}/dead-letters/replay`, { body: ids ? { ids } : {} });
          replace(outcome, note(`Asked for: ${res.body.requested} dead letter(s) of ${s.id} will be delivered again (one replica replays; a delivered one leaves the list).`));
        } catch (err) {
          replace(outcome, problem(err, `Replaying dead letters of ${s.id}`));
        }
      };
      replace(
        into,
        h("p", {}, `${body.count} dead letter${body.count === 1 ? "" : "s"}`),
        body.dead_letters.map((d) =>
          h(
            "details",
            {},
            h("summary", {}, `${d.webhook_id}: ${d.last_error}`),
            h("p", {}, `${d.attempts} attempts, failed `, when(d.failed_at), ` · ${d.topic} ${d.partition}:${d.offset}`),
            jsonBlock(safeParse(d.body), `Body of ${d.webhook_id}`),
            h("button", { type: "button", disabled: !canWrite, onclick: () => replay([d.webhook_id]) }, "Replay this one"),
          ),
        ),
        body.count ? h("button", { type: "button", disabled: !canWrite, onclick: () => replay(null) }, "Replay all") : null,
      );
    } catch (err) {
      replace(into, problem(err, "Loading dead letters"));
    }
  };

  refresh.addEventListener("click", load);
  load();
}

function safeParse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
