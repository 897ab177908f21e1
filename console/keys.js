// API keys: scopes and rate limits; create (the key shown once), rotate (a new key shown once,
// the old one refused at once), revoke.

import { exportBar } from "./export.js";
import { call, get, session } from "./api.js";
import { h, replace, loading, problem, note, table, field, when, secretOnce, showPage } from "./dom.js";

const limitText = (r) => {
  if (!r || (!r.requests_per_s && !r.events_per_s)) return "unlimited";
  const parts = [];
  if (r.requests_per_s) parts.push(`${r.requests_per_s} req/s`);
  if (r.events_per_s) parts.push(`${r.events_per_s} events/s`);
  if (r.burst) parts.push(`burst ${r.burst}`);
  return parts.join(", ");
};

export async function page(main) {
  const canWrite = session.canWrite();
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 128 });
  const scopes = h("input", { type: "text", name: "scopes", required: true, spellcheck: "false", placeholder: "ingest:jira read:jira" });
  const expires = h("input", { type: "datetime-local", name: "expires" });
  const rps = h("input", { type: "number", name: "requests_per_s", min: "0", step: "any", inputmode: "decimal" });
  const eps = h("input", { type: "number", name: "events_per_s", min: "0", step: "any", inputmode: "decimal" });
  const burst = h("input", { type: "number", name: "burst", min: "1", step: "1" });
  const create = h(
    "form",
    { class: "card", "aria-labelledby": "new-key-h", id: "new-key" },
    h("h2", { id: "new-key-h" }, "New key"),
    h(
      "div",
      { class: "row" },
      field("Name", name),
      field("Scopes", scopes, "Separated by spaces: ingest:<source>, consume:<group>, read:<source>, admin (* globs)"),
      field("Expires (optional, your time zone)", expires),
    ),
    h("div", { class: "row" }, field("Requests/s", rps, "empty: unlimited"), field("Events/s", eps, "empty: unlimited"), field("Burst", burst, "empty: one second's worth")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", disabled: !canWrite }, "Create key")),
  );
  const outcome = h("div", { id: "key-outcome", "aria-live": "polite" });
  const region = h("div", {}, loading("keys"));
  showPage(
    main,
    "API keys",
    "Keys authenticate clients and operators; scopes decide what each may do. A key is shown once, when created or rotated: Redis keeps only its hash.",
    create,
    outcome,
    region,
  );

  let listed = [];
  const exporter = exportBar(
    "keys",
    [
      "id",
      "name",
      ["scopes", (k) => k.scopes.join(" ")],
      ["requests_per_s", (k) => k.rate_limit && k.rate_limit.requests_per_s],
      ["events_per_s", (k) => k.rate_limit && k.rate_limit.events_per_s],
      ["burst", (k) => k.rate_limit && k.rate_limit.burst],
      "expires_at",
      "created_at",
      "created_by",
      "last_used_at",
    ],
    () => listed,
  );
  const load = async () => {
    try {
      const { keys } = await get("/v1/keys");
      keys.sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
      listed = keys;
      replace(
        region,
        exporter,
        table(
          `${keys.length} key${keys.length === 1 ? "" : "s"}, newest first`,
          ["Name", "Id", "Scopes", "Rate limit", "Expires", "Created", "Last used", "Actions"],
          keys.map((k) => [
            h("span", { class: "wrap" }, k.name),
            h("code", {}, k.id),
            h("span", { class: "wrap" }, k.scopes.join(" ")),
            limitText(k.rate_limit),
            when(k.expires_at),
            h("span", {}, when(k.created_at), ` by ${k.created_by}`),
            when(k.last_used_at),
            h(
              "div",
              { class: "actions", "data-key": k.id },
              h("button", { type: "button", disabled: !canWrite, onclick: () => rotate(k), "aria-label": `Rotate key ${k.name} (${k.id})` }, "Rotate"),
              h("button", { type: "button", class: "danger", disabled: !canWrite, onclick: () => revoke(k), "aria-label": `Revoke key ${k.name} (${k.id})` }, "Revoke"),
            ),
          ]),
          { id: "keys" },
        ),
      );
    } catch (err) {
      replace(region, problem(err, "Loading the keys"));
    }
  };

  const rotate = async (k) => {
    if (!confirm(`Rotate ${k.name} (${k.id})? The current key stops working at once.`)) return;
    try {
      const res = await call("POST", `/v1/keys/${encodeURIComponent(k.id)}/rotate`);
      replace(outcome, note(`Rotated ${k.name} (${k.id}): the old key is refused from now on.`), secretOnce(res.body.key, `New key for ${k.name}`));
      load();
    } catch (err) {
      replace(outcome, problem(err, `Rotating ${k.id}`));
    }
  };

  const revoke = async (k) => {
    if (!confirm(`Revoke ${k.name} (${k.id})? Every replica refuses it within a second.`)) return;
    try {
      await call("DELETE", `/v1/keys/${encodeURIComponent(k.id)}`);
      replace(outcome, note(`Revoked ${k.name} (${k.id}).`));
      load();
    } catch (err) {
      replace(outcome, problem(err, `Revoking ${k.id}`));
    }
  };

  create.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { name: name.value, scopes: scopes.value.split(/[\s,]+/).filter(Boolean) };
    if (expires.value) body.expires_at = new Date(expires.value).toISOString();
    const limit = {};
    if (rps.value) limit.requests_per_s = Number(rps.value);
    if (eps.value) limit.events_per_s = Number(eps.value);
    if (burst.value) limit.burst = Number(burst.value);
    if (Object.keys(limit).length) body.rate_limit = limit;
    try {
      const res = await call("POST", "/v1/keys", { body });
      create.reset();
      replace(outcome, note(`Created ${res.body.name} (${res.body.id}) with ${res.body.scopes.join(" ")}.`), secretOnce(res.body.key, `Key ${res.body.name}`));
      load();
    } catch (err) {
      replace(outcome, problem(err, "Creating the key"));
    }
  });
  load();
}
