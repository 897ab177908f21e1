// What github.mjs and jira.mjs share: the packages scripts/clients.sh installed (under
// $METASTREAM_CLIENTS_NODE_PATH), and one POST whose answer is printed as a JSON line.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const nodePath = process.env.METASTREAM_CLIENTS_NODE_PATH;
if (!nodePath) {
  console.error("METASTREAM_CLIENTS_NODE_PATH is not set (eval \"$(scripts/clients.sh paths)\")");
  process.exit(2);
}

// NODE_PATH does not apply to ESM imports: a CommonJS package comes through a require() rooted
// there, an ESM-only one through its package.json's export.
export const requireInstalled = createRequire(join(nodePath, "noop.js"));

export async function importInstalled(name) {
  const dir = join(nodePath, name);
  let entry = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).exports["."];
  while (typeof entry === "object") entry = entry.node ?? entry.import ?? entry.default;
  return import(pathToFileURL(join(dir, entry)).href);
}

// POSTs `body` with `headers`; prints {...report, status, body: <the answer, parsed if JSON>}.
// A request that fails (no answer at all) ends the script with code 1, naming `what`.
export async function postAndReport(url, body, headers, report, what) {
  let response;
  try {
    response = await fetch(url, { method: "POST", body, headers });
  } catch (err) {
    console.error(`${what} to ${url} failed: ${err.cause?.message ?? err.message}`);
    process.exit(1);
  }
  const text = await response.text();
  let parsed;
  try { parsed = JSON.parse(text); } catch { parsed = text; }
  console.log(JSON.stringify({ ...report, status: response.status, body: parsed }));
}
