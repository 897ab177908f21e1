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
def map_query(ctx, query):
    """GET /consume long-polls up to wait_ms (30 s at most); the contract run checks answers,
    not waiting, so it waits at most 200 ms a call."""
    if query is not None and ctx.operation.path == "/consume":
        wait = query.get("wait_ms")
        if not isinstance(wait, int) or 0 <= wait:
            query["wait_ms"] = min(wait if isinstance(wait, int) else 0, 200)
    return query
