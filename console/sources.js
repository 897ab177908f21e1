// Sources: the list, and the editor of one source's operations with the catalog at hand, the
// API's validation errors shown at their place in the text, a step-by-step preview of the
// unsaved edit, and the versioned save (a conflicting edit is shown, never overwritten).

import { call, get, session, query, ApiError } from "./api.js";
import { h, replace, jsonBlock, loading, problem, note, table, field, titled, secretOnce, showPage } from "./dom.js";
import { locate, spanOf, lineOf } from "./jsonpos.js";
import { exportBar } from "./export.js";

const kindOf = (c) => c.kind || "envelope";
const opNames = (ops) => (ops && ops.length ? ops.map((o) => o.op).join(", ") : "—");

export async function list(main) {
  const region = h("div", {}, loading("sources"));
  const name = h("input", { type: "text", name: "source", pattern: "[A-Za-z0-9_.\\-]{1,64}", required: true, spellcheck: "false" });
  const create = h(
    "form",
    { class: "row card", "aria-label": "New source" },
    field("New source", name, "Letters, digits, _ . - (it opens in the editor; nothing is stored until you save)."),
    h("button", { type: "submit", disabled: !session.canWrite() }, "Open editor"),
  );
  create.addEventListener("submit", (e) => {
    e.preventDefault();
    if (name.value) location.hash = `#/sources/${encodeURIComponent(name.value)}`;
  });
  showPage(
    main,
    "Sources",
    "Every source's configuration of operations, as the admin API stores it. Open one to edit, preview and save.",
    create,
    region,
  );
  try {
    // The rates come from the services' metrics (GET /v1/pipeline); without them the list
    // still shows, with the rates unknown.
    const [{ sources }, pipeline] = await Promise.all([get("/v1/sources"), get("/v1/pipeline").catch(() => null)]);
    const rates = (pipeline && pipeline.rates.sources) || {};
    const rate = (c, k) => (pipeline ? (rates[c.source] || {})[k] || 0 : null);
    const hour = pipeline ? `Dead letters (last ${Math.max(1, Math.round(Math.min(pipeline.rates.window_s, 3600) / 60))} min)` : "Dead letters";
    const rows = sources.map((c) => ({ ...c, events_per_s: rate(c, "ingested_per_s"), dead_letters: rate(c, "dead_letters") }));
    replace(
      region,
      exportBar("sources", ["source", ["kind", kindOf], "version", "on_error", "events_per_s", "dead_letters", "pre", "post"], () => rows),
      table(
        `${sources.length} source${sources.length === 1 ? "" : "s"}`,
        ["Source", "Kind", "Version", "Events/s (5 min)", hour, "On error", "Pre operations", "Post operations", "Signing"],
        rows.map((c) => [
          h("a", { href: `#/sources/${encodeURIComponent(c.source)}` }, c.source),
          kindOf(c),
          String(c.version),
          c.events_per_s === null ? "—" : String(c.events_per_s),
          c.dead_letters === null ? "—" : c.dead_letters ? h("a", { href: `#/dead-letters?source=${encodeURIComponent(c.source)}` }, String(c.dead_letters)) : "0",
          c.on_error || "—",
          opNames(c.pre),
          opNames(c.post),
          c.signing ? `generation ${c.signing.generation}` : "—",
        ]),
        { id: "sources-table" },
      ),
    );
  } catch (err) {
    replace(region, problem(err, "Loading the sources"));
  }
}

/** The catalog of operations, once per page load (it changes only with a new release). */
let catalogPromise = null;
const catalog = () => (catalogPromise ||= get("/v1/operations").catch((e) => ((catalogPromise = null), Promise.reject(e))));

export async function editor(main, source) {
  const heading = titled(h("h1", {}, `Source ${source}`), `Source ${source}`);
  const meta = h("p", { class: "lead", id: "source-meta" }, "");
  const text = h("textarea", { class: "code", id: "config", spellcheck: "false", autocomplete: "off", "aria-describedby": "config-errors" });
  const errors = h("div", { id: "config-errors", "aria-live": "polite" });
  const saveResult = h("div", { id: "save-result", "aria-live": "polite" });
  const canWrite = session.canWrite();
  const saveButton = h("button", { type: "button", class: "primary", id: "save", disabled: true }, "Save");
  const reloadButton = h("button", { type: "button", id: "reload" }, "Discard edit, load stored");
  const sample = h("textarea", { class: "code sample", id: "sample", spellcheck: "false" });
  const samples = h("select", { id: "samples" }, h("option", { value: "" }, "Paste an event, or pick a recent dead letter…"));
  const previewButton = h("button", { type: "button", id: "preview", disabled: true }, "Preview the edit");
  const previewOut = h("div", { id: "preview-result", "aria-live": "polite" });
  const catalogPanel = h("aside", { class: "card catalog", "aria-labelledby": "catalog-h" }, h("h2", { id: "catalog-h" }, "Operation catalog"), loading("the catalog"));

  // What the editor was loaded from: the version a save must match (0: a new source).
  let base = { version: null, kind: "envelope" };

  replace(
    main,
    h("p", {}, h("a", { href: "#/sources" }, "← All sources")),
    heading,
    meta,
    h(
      "div",
      { class: "grid2" },
      h(
        "div",
        {},
        h(
          "section",
          { class: "card", "aria-labelledby": "edit-h" },
          h("h2", { id: "edit-h" }, "Configuration"),
          field("Operations (JSON: pre, post, on_error, kind, native)", text, "The body of PUT /v1/sources/{source}; source, version and signing are the server's."),
          errors,
          h("div", { class: "actions" }, saveButton, reloadButton),
          saveResult,
        ),
        h(
          "section",
          { class: "card", "aria-labelledby": "preview-h" },
          h("h2", { id: "preview-h" }, "Preview"),
          h("p", { class: "hint" }, "Runs pre then post on the event exactly as the transformers would, with the edit above (not yet saved). Nothing is stored or published."),
          field("Recent events", samples),
          field("Event", sample),
          h("div", { class: "actions" }, previewButton),
          previewOut,
        ),
      ),
      catalogPanel,
    ),
  );

  const showErrors = (list, heading) => {
    if (!list.length) {
      replace(errors);
      text.removeAttribute("aria-invalid");
      return;
    }
    text.setAttribute("aria-invalid", "true");
    const spans = (() => {
      try {
        return locate(text.value);
      } catch {
        return new Map();
      }
    })();
    replace(
      errors,
      h("p", { class: "problem", role: "alert" }, h("strong", {}, heading)),
      h(
        "ul",
        { class: "errors" },
        list.map((e) => {
          const span = e.location ? spanOf(spans, e.location) : null;
          const line = span ? lineOf(text.value, span.start) : null;
          return h(
            "li",
            { "data-location": e.location || "" },
            h("span", { class: "loc" }, e.location || "(config)"),
            line ? h("span", {}, ` (line ${line}${span.exact ? "" : `, in ${span.at}`})`) : null,
            ": ",
            h("span", { class: "msg" }, e.message),
            " ",
            span
              ? h(
                  "button",
                  {
                    type: "button",
                    class: "link",
                    onclick: () => {
                      text.focus();
                      text.setSelectionRange(span.start, span.end);
                    },
                  },
                  `Show it in the editor`,
                )
              : null,
          );
        }),
      ),
    );
  };

  /** The edit as an object, or null after showing why it is not JSON. */
  const parsed = () => {
    try {
      const value = JSON.parse(text.value);
      if (!value || typeof value !== "object" || Array.isArray(value)) throw new SyntaxError("the configuration must be a JSON object");
      return value;
    } catch (err) {
      showErrors([{ location: null, message: err.message }], "Not valid JSON");
      return null;
    }
  };

  const setBase = (config, version) => {
    base = { version, kind: config ? kindOf(config) : "envelope" };
    const editable = config ? { ...config } : { pre: [], post: [], on_error: "dead_letter" };
    delete editable.source;
    delete editable.version;
    delete editable.signing;
    text.value = JSON.stringify(editable, null, 2);
    replace(
      meta,
      version ? `Kind ${base.kind} · stored version ${version} · on error: ${config.on_error || "—"}` : "New source: not stored yet. Saving creates it (only if nobody else created it meanwhile).",
    );
    saveButton.textContent = version ? `Save as version ${version + 1}` : "Create";
    saveButton.disabled = !canWrite;
    if (!canWrite) saveButton.title = "This key lacks the admin scope: the API refuses changes.";
    // A preview changes nothing: a `read:` key covering the source may run it.
    previewButton.disabled = false;
    showErrors([]);
  };

  const load = async () => {
    replace(saveResult);
    try {
      const res = await call("GET", `/v1/sources/${encodeURIComponent(source)}`);
      setBase(res.body, res.body.version);
      return res.body;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        setBase(null, 0);
        return null;
      }
      text.disabled = true;
      replace(errors, problem(err, "Loading the source"));
      return null;
    }
  };

  reloadButton.addEventListener("click", load);
  saveButton.addEventListener("click", async () => {
    const config = parsed();
    if (!config) return;
    saveButton.disabled = true;
    replace(saveResult, h("p", { class: "loading", role: "status" }, "Saving…"));
    try {
      const res = await call("PUT", `/v1/sources/${encodeURIComponent(source)}`, { body: config, headers: { "If-Match": String(base.version) } });
      const secret = res.body.secret;
      setBase(res.body, res.body.version);
      replace(
        saveResult,
        note(`Saved: version ${res.body.version}. Every service applies it within milliseconds.`),
        secret ? secretOnce(secret, "The source's signing secret") : null,
      );
    } catch (err) {
      saveButton.disabled = !canWrite;
      if (err instanceof ApiError && err.status === 400 && err.errors.length) {
        replace(saveResult);
        showErrors(err.errors, `Not saved: ${err.message}`);
      } else if (err instanceof ApiError && err.status === 412) {
        conflict(err);
      } else {
        replace(saveResult, problem(err, "Saving"));
      }
    }
  });

  // 412: someone else saved first. Their version is shown beside the edit; nothing is
  // overwritten unless the operator explicitly says so.
  const conflict = async (err) => {
    const theirs = h("div", {}, loading("the stored version"));
    const mine = base.version;
    replace(
      saveResult,
      h(
        "div",
        { class: "problem", role: "alert", id: "conflict" },
        h("strong", {}, "Not saved: the source changed since you loaded it (HTTP 412 version_mismatch)."),
        h("span", { class: "msg" }, err.message),
        h("span", { class: "msg" }, `Your edit is still in the editor, based on version ${mine}. Compare with the stored version below, then either discard your edit or save it over theirs.`),
      ),
      theirs,
    );
    try {
      const res = await call("GET", `/v1/sources/${encodeURIComponent(source)}`);
      const stored = res.body;
      replace(
        theirs,
        h("h3", {}, `Stored version ${stored.version}`),
        jsonBlock(stored, `Stored configuration, version ${stored.version}`),
        h(
          "div",
          { class: "actions" },
          h("button", { type: "button", onclick: load }, `Discard my edit, load version ${stored.version}`),
          h(
            "button",
            {
              type: "button",
              class: "danger",
              onclick: () => {
                base.version = stored.version;
                saveButton.textContent = `Save over version ${stored.version}`;
                replace(saveResult, note(`Your edit will replace version ${stored.version} when you press “Save over version ${stored.version}”.`, "warn"));
                saveButton.focus();
              },
            },
            `Keep my edit, save over version ${stored.version}`,
          ),
        ),
      );
    } catch (e2) {
      replace(theirs, problem(e2, "Loading the stored version"));
    }
  };

  previewButton.addEventListener("click", async () => {
    const config = parsed();
    if (!config) return;
    let event;
    try {
      event = JSON.parse(sample.value);
    } catch (err) {
      replace(previewOut, problem({ message: `The event is not valid JSON: ${err.message}` }, "Preview"));
      return;
    }
    replace(previewOut, h("p", { class: "loading", role: "status" }, "Running the operations…"));
    try {
      const res = await call("POST", `/v1/sources/${encodeURIComponent(source)}/preview`, { body: { event, config } });
      showErrors([]);
      replace(previewOut, previewView(res.body, event));
    } catch (err) {
      if (err instanceof ApiError && err.status === 400 && err.errors.length) {
        replace(previewOut, problem(err, "Preview"));
        showErrors(err.errors, `Preview refused the configuration: ${err.message}`);
      } else {
        replace(previewOut, problem(err, "Preview"));
      }
    }
  });

  samples.addEventListener("change", () => {
    const opt = samples.selectedOptions[0];
    if (opt && opt.value) sample.value = JSON.stringify(JSON.parse(opt.value), null, 2);
  });

  const stored = await load();
  sample.value = JSON.stringify({ id: "sample-1", source, payload: { title: "An example" }, metadata: {} }, null, 2);
  if (stored !== undefined) fillSamples(source, samples);
  fillCatalog(catalogPanel, text, (msg) => showErrors([{ location: null, message: msg }], "Cannot add the operation"));
}

/** The last dead letters of the source, as events to preview (their original envelope). */
async function fillSamples(source, select) {
  try {
    let cursor = "";
    let items = [];
    for (let page = 0; page < 5; page++) {
      const body = await get(`/v1/dead-letters${query({ source, limit: 200, cursor })}`);
      items = items.concat(body.dead_letters.filter((d) => d.payload && typeof d.payload === "object"));
      if (!body.count || body.next_cursor === cursor) break;
      cursor = body.next_cursor;
    }
    for (const d of items.slice(-10).reverse()) {
      select.append(h("option", { value: JSON.stringify(d.payload) }, `dead letter ${d.partition}:${d.offset} — id ${d.event_id} — ${d.reason}: ${d.error}`.slice(0, 160)));
    }
  } catch {
    // Samples are a convenience: the operator can still paste an event.
  }
}

/** The outcome, then each stage's steps with what each changed, then the result. */
function previewView(answer, input) {
  const badge = h("span", { class: `badge ${answer.outcome}` }, answer.outcome);
  let before = input;
  const stages = answer.stages.map((stage) => {
    const steps = stage.steps.map((step) => {
      if (step.skipped) return h("li", {}, h("strong", {}, `${stage.stage}[${step.index}] ${step.op}`), ` skipped: ${step.skipped}`);
      const changed = diffPaths(before, step.event);
      before = step.event;
      return h(
        "li",
        { "data-step": `${stage.stage}[${step.index}]` },
        h("strong", {}, `${stage.stage}[${step.index}] ${step.op}`),
        h("div", { class: "changed" }, changed.length ? `changed: ${changed.join(", ")}` : "changed nothing"),
        h("details", {}, h("summary", {}, "Event after this step"), jsonBlock(step.event, `Event after ${stage.stage}[${step.index}] ${step.op}`)),
      );
    });
    if (stage.error) {
      steps.push(
        h(
          "li",
          { class: "error", "data-step": `${stage.stage}[${stage.error.index}]` },
          h("strong", {}, `${stage.stage}[${stage.error.index}] ${stage.error.op} failed: `),
          h("span", { class: "msg" }, stage.error.message),
          answer.on_error ? h("div", { class: "changed" }, `on_error: ${answer.on_error} — what the stage would do with this event`) : null,
        ),
      );
    }
    if (stage.filtered_by) steps.push(h("li", {}, h("strong", {}, `${stage.stage}[${stage.filtered_by.index}] ${stage.filtered_by.op}`), " dropped the event (filter): nothing is stored or published."));
    return h("section", {}, h("h3", {}, `${stage.stage} (${stage.steps.length} step${stage.steps.length === 1 ? "" : "s"})`), h("ol", { class: "steps" }, steps));
  });
  return h(
    "div",
    { id: "preview-view" },
    h("p", {}, "Outcome: ", badge, ` · run with the edit above, not yet saved (stored version ${answer.config_version})`),
    stages,
    answer.result ? h("section", {}, h("h3", {}, "Result (as published)"), jsonBlock(answer.result, "Resulting event")) : null,
  );
}

/** Paths whose values differ between two events (payload, metadata, routing: all of it). */
function diffPaths(a, b) {
  const flat = (v, p, out) => {
    if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) for (const [k, x] of Object.entries(v)) flat(x, p ? `${p}.${k}` : k, out);
    else out.set(p, JSON.stringify(v));
    return out;
  };
  const fa = flat(a, "", new Map());
  const fb = flat(b, "", new Map());
  const keys = new Set([...fa.keys(), ...fb.keys()]);
  return [...keys].filter((k) => fa.get(k) !== fb.get(k) && !k.startsWith("received_at") && !k.startsWith("provenance")).sort();
}

/** The catalog beside the editor: each operation's parameters and docs as the API gives them. */
async function fillCatalog(panel, text, complain) {
  const heading = panel.querySelector("h2");
  let cat;
  try {
    cat = await catalog();
  } catch (err) {
    replace(panel, heading, problem(err, "Loading the operation catalog"));
    return;
  }
  const pick = h("select", { id: "catalog-op" }, cat.operations.map((o) => h("option", { value: o.name }, o.name)));
  const detail = h("div", { id: "catalog-detail", "aria-live": "polite" });
  const show = () => {
    const op = cat.operations.find((o) => o.name === pick.value);
    const add = (stage) => {
      let config;
      try {
        config = JSON.parse(text.value);
      } catch (err) {
        complain(`fix the JSON first (${err.message})`);
        return;
      }
      config[stage] = Array.isArray(config[stage]) ? config[stage] : [];
      config[stage].push(op.example);
      text.value = JSON.stringify(config, null, 2);
      text.focus();
    };
    replace(
      detail,
      h("p", {}, op.summary),
      h("h3", {}, `Parameters of ${op.name}`),
      op.params.length
        ? h(
            "dl",
            { class: "params" },
            op.params.map((p) => [
              h("dt", {}, h("code", {}, p.name)),
              h("dd", {}, h("div", { class: "hint" }, `${p.type} · ${p.required ? "required" : "optional"}${p.default === null ? "" : ` · default ${p.default}`}`), p.description),
            ]),
          )
        : h("p", {}, "No parameters."),
      h("h3", {}, "Example"),
      jsonBlock(op.example, `Example of ${op.name}`),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", onclick: () => add("pre"), disabled: !session.canWrite() }, "Add example to pre"),
        h("button", { type: "button", onclick: () => add("post"), disabled: !session.canWrite() }, "Add example to post"),
      ),
    );
  };
  pick.addEventListener("change", show);
  replace(
    panel,
    heading,
    field("Operation", pick),
    detail,
    h("details", {}, h("summary", {}, "Paths"), h("p", {}, cat.paths)),
    h(
      "details",
      {},
      h("summary", {}, "Conditions (`when`)"),
      h(
        "ul",
        {},
        cat.conditions.map((c) => h("li", {}, c.description, " ", h("code", {}, JSON.stringify(c.example)))),
      ),
    ),
  );
  show();
}
