"""CloudEvents client for metastream's e2e tests (run against the gateway): events made and encoded
by the CloudEvents Python SDK (cloudevents 2.x: `cloudevents.core`; the 1.x `cloudevents.http`
API lives on there only as the deprecated `cloudevents.v1.http`), POSTed with requests and
`Authorization: Bearer <api_key>`. One JSON line ({"status", "body"}) per request; exits non-zero
on a network error (not on an error status: the tests check those).

usage: python cloudevents_emit.py <url> <api_key> binary|structured|batch
  binary      one event: attributes in ce-* headers, Content-Type: application/json, data as body
  structured  one event: Content-Type: application/cloudevents+json, the event as body
  batch       three events (subjects warehouse.a/b/c): Content-Type: application/cloudevents-batch+json,
              a JSON array of the SDK's structured events (the SDK has no batch encoder)
(the interpreter: $METASTREAM_CLIENTS_PYTHON, from scripts/clients.sh)
"""

import json
import sys

import requests
from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

if len(sys.argv) != 4 or sys.argv[3] not in ("binary", "structured", "batch"):
    sys.exit(__doc__)
url, api_key, mode = sys.argv[1:]


def event(subject: str) -> CloudEvent:
    # id (a UUID4), specversion 1.0 and time (now) are filled in by the SDK.
    return CloudEvent(
        attributes={
            "type": "com.example.dataset.updated",
            "source": "/datasets/warehouse",
            "subject": subject,
            "datacontenttype": "application/json",
        },
        data={"dataset": subject, "rows": 42, "partition": "2024-06-01"},
    )


fmt = JSONFormat()
if mode == "batch":
    events = [to_structured(event(f"warehouse.{s}"), fmt).body for s in "abc"]
    headers, body = {"Content-Type": "application/cloudevents-batch+json"}, b"[" + b",".join(events) + b"]"
else:
    message = (to_binary if mode == "binary" else to_structured)(event("warehouse.orders"), fmt)
    headers, body = dict(message.headers), message.body

try:
    response = requests.post(url, data=body, headers={**headers, "Authorization": f"Bearer {api_key}"}, timeout=30)
except requests.RequestException as err:
    sys.exit(f"cloudevents_emit.py: {mode} POST to {url} failed: {err}")
try:
    answer = response.json()
except ValueError:
    answer = response.text
print(json.dumps({"mode": mode, "status": response.status_code, "body": answer}), flush=True)
