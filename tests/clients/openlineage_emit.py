"""OpenLineage client for metastream's e2e tests (run against the gateway): openlineage-python's
own OpenLineageClient and HttpTransport (POST <base_url>/api/v1/lineage, `Authorization: Bearer
<api_key>`) emit one run of a job (START, RUNNING, COMPLETE) and a second run (START, FAIL); one
JSON line per event. A non-2xx answer raises (HttpTransport calls raise_for_status; 500/502/503/504
are retried first, 5 times), so the script exits non-zero.

usage: python openlineage_emit.py <base_url> <api_key> <namespace> <job_name>
(the interpreter: $METASTREAM_CLIENTS_PYTHON, from scripts/clients.sh)
"""

import json
import sys
from datetime import datetime, timezone

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport
from openlineage.client.uuid import generate_new_uuid

if len(sys.argv) != 5:
    sys.exit(__doc__)
base_url, api_key, namespace, job_name = sys.argv[1:]
# The transport urljoin()s the endpoint to the URL: without a trailing slash, a base URL's last
# path segment would be replaced (http://h/x/y -> http://h/x/api/v1/lineage).
base_url = base_url.rstrip("/") + "/"

transport = HttpTransport(
    HttpConfig(url=base_url, endpoint="api/v1/lineage", auth=ApiKeyTokenProvider({"apiKey": api_key}))
)
client = OpenLineageClient(transport=transport)
# OPENLINEAGE_DISABLED=true in the environment would swap in a no-op transport that sends nothing.
if client.transport is not transport:
    sys.exit(f"OpenLineageClient ignored the HTTP transport (uses `{client.transport.kind}`): unset OPENLINEAGE_DISABLED")

job = Job(namespace=namespace, name=job_name)
inputs = [InputDataset("postgres://db", "public.orders")]
outputs = [OutputDataset("s3://bucket", "warehouse/orders_daily")]

for states in ([RunState.START, RunState.RUNNING, RunState.COMPLETE], [RunState.START, RunState.FAIL]):
    run = Run(runId=str(generate_new_uuid()))
    for state in states:
        event = RunEvent(
            eventType=state,
            eventTime=datetime.now(timezone.utc).isoformat(),
            run=run,
            job=job,
            inputs=inputs,
            outputs=outputs,
        )
        client.emit(event)  # raises requests.HTTPError (or RetryError) on a non-2xx answer
        print(json.dumps({"eventType": state.value, "runId": run.runId}), flush=True)
