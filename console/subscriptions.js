// Webhook subscriptions: delivery status (lag, last success and error, failures in a row),
// pause and resume, secret rotation, and each one's dead letters with replay.

import { call, get, session } from "./api.js";
import { h, replace, loading, problem, note, when, secretOnce, jsonBlock, showPage } from "./dom.js";

export async function page(main) {
  const canWrite = session.canWrite();
  const outcome = h("div", { id: "sub-outcome", "aria-live": "polite" });
  const region = h("div", {}, loading("subscriptions"));
  const refresh = h("button", { type: "button", id: "sub-refresh" }, "Refresh");
  showPage(
    main,
    "Webhook subscriptions",
    "Every processed event POSTed to each subscription's URL, signed. Lag counts events not yet delivered, passed over or dead-lettered.",
    h("div", { class: "actions" }, refresh),
    outcome,
    region,
  );

  const load = async () => {
    try {
      const { subscriptions } = await get("/v1/subscriptions");
      // The list carries no status: one GET each (a handful of subscriptions, at most
      // webhooks.max_subscriptions).
      const full = await Promise.all(subscriptions.map((s) => get(`/v1/subscriptions/${encodeURIComponent(s.id)}`).catch((err) => ({ ...s, statusError: err }))));
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
