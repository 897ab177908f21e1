// Jira Cloud webhook client for metastream's e2e tests (run against the gateway): sends each
// payload of ./jira/ (built from Atlassian's documented examples, see jira/README.md) signed as
// Jira's admin webhooks sign (X-Hub-Signature: sha256=<hex>, computed by @octokit/webhooks-methods,
// not by metastream's code), with Jira's delivery headers; prints one JSON line per delivery.
//   node jira.mjs <url> <secret> [--redeliver]   (packages from $METASTREAM_CLIENTS_NODE_PATH)
// --redeliver sends the first payload again with its identifier, as a Jira retry does.
import { randomUUID } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { importInstalled, postAndReport } from "./packages.mjs";

const { sign, verify } = await importInstalled("@octokit/webhooks-methods");

const [url, secret, flag] = process.argv.slice(2);
if (!url || !secret) {
  console.error("usage: node jira.mjs <url> <secret> [--redeliver]");
  process.exit(2);
}
const here = join(dirname(fileURLToPath(import.meta.url)), "jira");
// In the order a Jira site would send them: the issue, its update and comment, then the rest.
const order = ["issue_created", "issue_updated", "comment_created", "project_created", "sprint_started", "version_released"];
const payloads = order.map((name) => [name, readFileSync(join(here, `${name}.json`), "utf8").trim()]);
if (readdirSync(here).filter((f) => f.endsWith(".json")).length !== order.length) throw new Error("jira/ holds payloads not in the send order");

async function send(name, body, identifier, flow) {
  const signature = await sign(secret, body);
  if (!(await verify(secret, body, signature))) throw new Error("webhooks-methods does not verify its own signature");
  const headers = {
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "Atlassian Webhook HTTP Client",
    "X-Atlassian-Webhook-Identifier": identifier,
    "X-Atlassian-Webhook-Flow": flow,
    "X-Hub-Signature": signature,
  };
  await postAndReport(url, body, headers, { event: name, identifier, flow }, `jira.mjs: ${name}`);
}

const first = randomUUID();
for (const [i, [name, body]] of payloads.entries()) {
  await send(name, body, i === 0 ? first : randomUUID(), "Primary");
}
if (flag === "--redeliver") await send(payloads[0][0], payloads[0][1], first, "Secondary");
