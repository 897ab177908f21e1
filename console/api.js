// The admin API, called with the operator's key. The key lives in sessionStorage only (this tab,
// until it closes; never a cookie, never localStorage) and travels as `Authorization: Bearer`.
// Every scope check is the API's: the console only reflects what the API answered.

const KEY = "metastream.console.key";
const ACCESS = "metastream.console.access";

/** An answer the API refused, with its JSON error body `{error, message, …}` taken apart. */
export class ApiError extends Error {
  constructor(status, body, headers) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.errors = (body && Array.isArray(body.errors) && body.errors) || [];
    this.requiredScope = body && body.required_scope;
    this.retryAfter = headers && headers.get("retry-after");
    this.body = body;
  }
}

export const session = {
  key: () => sessionStorage.getItem(KEY),
  /** "admin" (may change things) or "read-only" (the API refused the admin scope: 403; its
   * `read:` scopes, if any, still show the sources they cover). */
  access: () => sessionStorage.getItem(ACCESS),
  canWrite: () => sessionStorage.getItem(ACCESS) === "admin",
  set(key, access) {
    sessionStorage.setItem(KEY, key);
    sessionStorage.setItem(ACCESS, access);
  },
  clear() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ACCESS);
  },
};

/**
 * One call. Resolves with `{status, body, headers}` for a 2xx; rejects with an ApiError for
 * anything else, or with a TypeError when nothing answered.
 */
export async function call(method, path, { body, headers = {}, key } = {}) {
  const h = { Accept: "application/json", ...headers };
  const k = key || session.key();
  if (k) h.Authorization = `Bearer ${k}`;
  if (body !== undefined) h["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers: h,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await res.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { error: "not_json", message: text.slice(0, 300) };
  }
  if (!res.ok) throw new ApiError(res.status, parsed, res.headers);
  return { status: res.status, body: parsed, headers: res.headers };
}

export const get = (path) => call("GET", path).then((r) => r.body);

/**
 * What a key may do here: GET /v1/keys (admin only) answers 200 to an admin key and 403 to any
 * other valid key; 401 means the key itself was refused.
 */
export async function probe(key) {
  try {
    await call("GET", "/v1/keys", { key });
    return "admin";
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) return "read-only";
    throw err;
  }
}

/** `?a=1&b=2` of the non-empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

let settings = null;
/** The console's settings as the gateway serves them (/console/config.json), fetched once. */
export function config() {
  settings ||= fetch("/console/config.json", { credentials: "omit", cache: "no-store" })
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`/console/config.json answered ${r.status}`))))
    .catch((e) => ((settings = null), Promise.reject(e)));
  return settings;
}

/**
 * The consumer-api's origin as the gateway is configured with it
 * (`gateway.console.consumer_api_url`), or null when unset. The page's
 * Content-Security-Policy lets the console connect there and nowhere else.
 */
export function consumerApi() {
  return config().then((c) => c.consumer_api_url || null);
}

/** The JSON error body of a refused answer, as an ApiError. */
export async function refusal(res) {
  const text = await res.text();
  let body;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { error: "not_json", message: text.slice(0, 300) };
  }
  return new ApiError(res.status, body, res.headers);
}
