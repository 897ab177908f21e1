"""schemathesis hooks for metastream's contract run (scripts/contract.sh)."""
import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    """POST /ingest/batch takes NDJSON: one JSON event per line."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


@schemathesis.hook
def before_call(ctx, case, kwargs):
    """GET /consume long-polls up to wait_ms (30 s at most). The contract run checks answers, not
    waiting: a valid wait_ms is capped at 200 ms, a missing one set to 0 (invalid values are
    left alone, so negative cases stay negative). Runs for every call, whatever the phase."""
    if case.operation.path != "/consume":
        return
    query = case.query if case.query is not None else {}
    wait = query.get("wait_ms")
    if wait is None:
        query["wait_ms"] = 0
    else:
        # Generated as a number or, in the coverage phase, as its text.
        text = str(wait) if isinstance(wait, (int, str)) and not isinstance(wait, bool) else ""
        if text.isdigit() and int(text) <= 30000:
            query["wait_ms"] = type(wait)(min(int(text), 200))
    case.query = query
