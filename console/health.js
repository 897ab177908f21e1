// Health at a glance: each service's instances and readiness, each stage's lag, and events/s
// and end-to-end latency over the last minutes — all from GET /v1/pipeline (the instances'
// pulse in Redis and their own metrics, the stages' groups in Kafka), refreshed every 10 s
// while the page is open. Grafana (gateway.console.dashboards_url) has the rest.

import { get, config } from "./api.js";
import { h, replace, problem, table, when, showPage } from "./dom.js";

const REFRESH_MS = 10_000;
const SVG = "http://www.w3.org/2000/svg";

/** An SVG element (h() makes HTML ones). */
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const number = (x, digits = 1) => (x === null || x === undefined ? "—" : Number(x).toLocaleString(undefined, { maximumFractionDigits: digits }));
const ms = (x) => (x === null || x === undefined ? "—" : `${number(x, x < 10 ? 1 : 0)} ms`);
const clock = (at) => new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
const clockSeconds = (at) => new Date(at).toLocaleTimeString();

/**
 * A line chart of `series` (each {name, cls, values}) over `points` (their `at` on the x axis),
 * scaled to the largest value; gaps (null) break the line. Described by `title`; the numbers
 * themselves are in the table beside it.
 */
function chart(title, points, series, unit) {
  const [w, hgt, left, bottom, top] = [640, 180, 76, 22, 10];
  const values = series.flatMap((x) => x.values).filter((v) => v !== null && v !== undefined);
  const max = Math.max(1e-9, ...values) * 1.1;
  const x = (i) => left + (points.length <= 1 ? 0 : (i * (w - left - 8)) / (points.length - 1));
  const y = (v) => top + (hgt - top - bottom) * (1 - v / max);
  const svg = s("svg", { viewBox: `0 0 ${w} ${hgt}`, class: "chart", role: "img", "aria-label": `${title}; the values are in the table below` });
  for (const f of [0, 0.5, 1]) {
    svg.append(s("line", { x1: left, x2: w - 8, y1: y(max * f / 1.1), y2: y(max * f / 1.1), class: "grid" }));
    svg.append(s("text", { x: left - 6, y: y(max * f / 1.1) + 4, class: "axis", "text-anchor": "end" }, `${number(max * f / 1.1, 1)}${unit}`));
  }
  if (points.length) {
    for (const i of [0, points.length - 1]) svg.append(s("text", { x: x(i), y: hgt - 6, class: "axis", "text-anchor": i ? "end" : "start" }, clock(points[i].at)));
  }
  for (const { cls, values: vals } of series) {
    let d = "";
    vals.forEach((v, i) => {
      if (v === null || v === undefined) return;
      d += `${d && vals[i - 1] !== null && vals[i - 1] !== undefined ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
    });
    if (d) svg.append(s("path", { d, class: `line ${cls}` }));
    // A dot on each value: a step alone between empty ones has no line to show it.
    vals.forEach((v, i) => v !== null && v !== undefined && svg.append(s("circle", { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: `dot ${cls}` })));
  }
  const legend = h("ul", { class: "legend" }, series.map((x) => h("li", {}, h("span", { class: `swatch ${x.cls}`, "aria-hidden": "true" }), x.name)));
  return h("figure", { class: "card chart-card" }, h("figcaption", {}, title), svg, legend);
}

const STATE_TEXT = { ready: "ready", not_ready: "not ready", silent: "silent" };

function services(view) {
  return h(
    "ul",
    { class: "services", "aria-label": "Services" },
    view.services.map((sv) => {
      const ok = sv.instances > 0 && sv.ready === sv.instances;
      const status = sv.instances === 0 ? "no instance reporting" : `${sv.ready} of ${sv.instances} ready`;
      return h("li", { class: `service card ${ok ? "ok" : "bad"}` }, h("strong", {}, sv.service), h("span", {}, `${ok ? "✓" : "✗"} ${status}`));
    }),
  );
}

function instances(view) {
  return table(
    `${view.instances.length} instance${view.instances.length === 1 ? "" : "s"}`,
    ["Service", "Instance", "State", "Last report", "Checks", "Started", "Version"],
    view.instances.map((i) => [
      i.service,
      h("code", {}, i.instance),
      h("span", { class: `state ${i.state}` }, STATE_TEXT[i.state] || i.state),
      `${number(i.age_s)} s ago`,
      Object.entries(i.checks).map(([k, v]) => h("div", {}, `${k}: ${v}`)),
      when(i.started_at),
      i.version,
    ]),
    { id: "health-instances" },
  );
}

function lags(view) {
  return table(
    "Consumer lag per stage",
    ["Stage", "Group", "Input topic", "Lag (records)"],
    view.lag.map((l) => [l.stage, h("code", {}, l.group), h("code", {}, l.topic), l.lag === null || l.lag === undefined ? h("span", { class: "state not_ready" }, `unknown: ${l.error || "no answer"}`) : number(l.lag, 0)]),
    { id: "health-lag" },
  );
}

function numbers(view, open) {
  return h(
    "details",
    { open },
    h("summary", {}, "The charts' numbers"),
    table(
      "Per 30 seconds",
      ["Until", "Acknowledged/s", "Published/s", "Dead letters", "p50", "p99"],
      view.rates.series.map((p) => [clockSeconds(p.at), number(p.ingested_per_s, 2), number(p.published_per_s, 2), String(p.dead_letters), ms(p.p50_ms), ms(p.p99_ms)]),
      { id: "health-series" },
    ),
  );
}

function rates(view) {
  const points = view.rates.series;
  const pick = (k) => points.map((p) => p[k]);
  return [
    h(
      "div",
      { class: "summary card", id: "health-latency" },
      h("strong", {}, "End-to-end latency, last 5 minutes: "),
      `p50 ${ms(view.rates.p50_ms)}, p99 ${ms(view.rates.p99_ms)}`,
      h("span", { class: "hint" }, ` (gateway acknowledgement to publication; samples cover ${number(view.rates.window_s / 60, 0)} min)`),
    ),
    h(
      "div",
      { class: "charts" },
      chart("Events per second", points, [
        { name: "acknowledged by the gateway", cls: "a", values: pick("ingested_per_s") },
        { name: "published", cls: "b", values: pick("published_per_s") },
      ], "/s"),
      chart("End-to-end latency", points, [
        { name: "p50", cls: "a", values: pick("p50_ms") },
        { name: "p99", cls: "b", values: pick("p99_ms") },
      ], " ms"),
    ),
  ];
}

export async function page(main) {
  const minutes = h("select", { id: "health-minutes", "aria-label": "Chart window" }, [15, 30, 60].map((m) => h("option", { value: m }, `last ${m} minutes`)));
  const pause = h("button", { type: "button", id: "health-pause", "aria-pressed": "false" }, "Pause refresh");
  const status = h("p", { class: "hint", role: "status", id: "health-status" });
  const dashboards = h("span", {});
  const region = h("div", { id: "health", "aria-live": "off" }, h("p", { class: "loading", role: "status" }, "Loading the pipeline's health…"));
  showPage(
    main,
    "Health",
    "Each service's instances and whether they are ready, each stage's lag, and what flowed over the last minutes — from the pulse every instance writes to Redis and the services' own metrics. Refreshed every 10 seconds.",
    h("div", { class: "actions" }, minutes, pause, dashboards),
    status,
    region,
  );
  config()
    .then((c) => c.dashboards_url && replace(dashboards, h("a", { href: c.dashboards_url, target: "_blank", rel: "noopener noreferrer" }, "More in Grafana ↗")))
    .catch(() => {});
  let paused = false;
  const load = async () => {
    if (!document.body.contains(region)) return clearInterval(timer);
    try {
      const view = await get(`/v1/pipeline?minutes=${minutes.value}`);
      const numbersOpen = Boolean(region.querySelector("details[open]"));
      replace(region, services(view), ...rates(view), lags(view), instances(view), numbers(view, numbersOpen));
      replace(status, `Updated ${new Date(view.at).toLocaleTimeString()}.`);
    } catch (err) {
      replace(status);
      replace(region, problem(err, "Loading the pipeline's health"));
    }
  };
  const timer = setInterval(() => paused || load(), REFRESH_MS);
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.setAttribute("aria-pressed", String(paused));
    replace(pause, paused ? "Resume refresh" : "Pause refresh");
    if (!paused) load();
  });
  minutes.addEventListener("change", load);
  await load();
}
