// GitHub webhook client for metastream's e2e tests (run against the gateway): sends every example
// delivery of @octokit/webhooks-examples, signed with @octokit/webhooks-methods' sign(), with the
// headers GitHub's Hookshot sends, one after another; prints one JSON line per delivery.
//   node github.mjs <url> <secret>   (packages from $METASTREAM_CLIENTS_NODE_PATH: scripts/clients.sh)
//   node github.mjs --list           the number of examples of each event
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const nodePath = process.env.METASTREAM_CLIENTS_NODE_PATH;
if (!nodePath) {
  console.error("METASTREAM_CLIENTS_NODE_PATH is not set (eval \"$(scripts/clients.sh paths)\")");
  process.exit(2);
}
// NODE_PATH does not apply to ESM imports: the examples (JSON, CommonJS "main") come through a
// require() rooted there, and the ESM-only methods package through its package.json's export.
const require = createRequire(join(nodePath, "noop.js"));
const definitions = require("@octokit/webhooks-examples"); // [{name, description, actions, properties, examples}]
async function importEsm(name) {
  const dir = join(nodePath, name);
  let entry = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).exports["."];
  while (typeof entry === "object") entry = entry.node ?? entry.import ?? entry.default;
  return import(pathToFileURL(join(dir, entry)).href);
}
const { sign } = await importEsm("@octokit/webhooks-methods");

if (process.argv[2] === "--list") {
  for (const { name, examples } of definitions) console.log(`${name} ${examples.length}`);
  console.log(`total ${definitions.reduce((n, d) => n + d.examples.length, 0)}`);
  process.exit(0);
}
const [url, secret] = process.argv.slice(2);
if (!url || !secret) {
  console.error("usage: node github.mjs <url> <secret> | --list");
  process.exit(2);
}

for (const { name, examples } of definitions) {
  for (const payload of examples) {
    const body = JSON.stringify(payload);
    const delivery = randomUUID();
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        body,
        headers: {
          "Content-Type": "application/json",
          "User-Agent": "GitHub-Hookshot/abc1234",
          "X-GitHub-Event": name,
          "X-GitHub-Delivery": delivery,
          "X-GitHub-Hook-ID": "1",
          "X-GitHub-Hook-Installation-Target-Type": "repository",
          "X-GitHub-Hook-Installation-Target-ID": "1",
          "X-Hub-Signature-256": await sign(secret, body), // "sha256=<hex>"
        },
      });
    } catch (err) {
      console.error(`github.mjs: ${name} delivery ${delivery} to ${url} failed: ${err.cause?.message ?? err.message}`);
      process.exit(1);
    }
    const text = await response.text();
    let parsed;
    try { parsed = JSON.parse(text); } catch { parsed = text; }
    console.log(JSON.stringify({
      event: name, action: payload.action ?? null, delivery, status: response.status, body: parsed,
      bytes: Buffer.byteLength(body),
    }));
  }
}
