// GitHub webhook client for metastream's e2e tests (run against the gateway): sends every example
// delivery of @octokit/webhooks-examples, signed with @octokit/webhooks-methods' sign(), with the
// headers GitHub's Hookshot sends, one after another; prints one JSON line per delivery.
//   node github.mjs <url> <secret>   (packages from $METASTREAM_CLIENTS_NODE_PATH: scripts/clients.sh)
//   node github.mjs --list           the number of examples of each event
import { randomUUID } from "node:crypto";

import { importInstalled, postAndReport, requireInstalled } from "./packages.mjs";

const definitions = requireInstalled("@octokit/webhooks-examples"); // [{name, description, actions, properties, examples}]
const { sign } = await importInstalled("@octokit/webhooks-methods");

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
    const headers = {
      "Content-Type": "application/json",
      "User-Agent": "GitHub-Hookshot/abc1234",
      "X-GitHub-Event": name,
      "X-GitHub-Delivery": delivery,
      "X-GitHub-Hook-ID": "1",
      "X-GitHub-Hook-Installation-Target-Type": "repository",
      "X-GitHub-Hook-Installation-Target-ID": "1",
      "X-Hub-Signature-256": await sign(secret, body), // "sha256=<hex>"
    };
    const report = { event: name, action: payload.action ?? null, delivery, bytes: Buffer.byteLength(body) };
    await postAndReport(url, body, headers, report, `github.mjs: ${name} delivery ${delivery}`);
  }
}
