"""DataHub client for metastream's e2e tests (run against the gateway): acryl-datahub's own
DatahubRestEmitter, set up as the `datahub-rest` sink sets it up (Rest.li endpoints, not OpenAPI),
sends three aspects of one dataset: schemaMetadata, globalTags and ownership.
  - first GET <gms_url>/config (test_connection(), as the sink does): a non-200 answer, or one
    without "noCode": "true" (a JSON string), raises ConfigurationError;
  - single: one POST <gms_url>/aspects?action=ingestProposal per aspect, body {"proposal": {...}, "async": "false"};
  - batch:  one POST <gms_url>/aspects?action=ingestProposalBatch, body {"proposals": [...], "async": "false"}.
Every request carries `Authorization: Bearer <token>` and `X-RestLi-Protocol-Version: 2.0.0`. Any 2xx
answer is success (its body is not read); anything else raises OperationalError after retries
(429/500/502/503/504 and connection errors: 4 times over ~30 s, DATAHUB_REST_EMITTER_DEFAULT_RETRY_MAX_TIMES
in the environment changes that), so the script exits non-zero.
One JSON line per MCP sent.

usage: python datahub_emit.py <gms_url> <token> single|batch
(the interpreter: $METASTREAM_CLIENTS_PYTHON, from scripts/clients.sh)
"""

import json
import os
import sys

# The SDK's telemetry (Mixpanel) must stay off: the tests talk to 127.0.0.1 only.
os.environ["DATAHUB_TELEMETRY_ENABLED"] = "false"

from datahub.emitter.mcp import MetadataChangeProposalWrapper  # noqa: E402
from datahub.emitter.rest_emitter import DatahubRestEmitter, EmitMode  # noqa: E402
from datahub.metadata.schema_classes import (  # noqa: E402
    GlobalTagsClass,
    OtherSchemaClass,
    OwnerClass,
    OwnershipClass,
    OwnershipTypeClass,
    SchemaFieldClass,
    SchemaFieldDataTypeClass,
    SchemaMetadataClass,
    NumberTypeClass,
    StringTypeClass,
    TagAssociationClass,
)

if len(sys.argv) != 4 or sys.argv[3] not in ("single", "batch"):
    sys.exit(__doc__)
gms_url, token, mode = sys.argv[1:]

URN = "urn:li:dataset:(urn:li:dataPlatform:postgres,public.orders,PROD)"
aspects = [
    SchemaMetadataClass(
        schemaName="public.orders",
        platform="urn:li:dataPlatform:postgres",
        version=0,
        hash="",
        platformSchema=OtherSchemaClass(rawSchema=""),
        fields=[
            SchemaFieldClass(fieldPath="id", type=SchemaFieldDataTypeClass(NumberTypeClass()), nativeDataType="bigint"),
            SchemaFieldClass(fieldPath="email", type=SchemaFieldDataTypeClass(StringTypeClass()), nativeDataType="text"),
        ],
    ),
    GlobalTagsClass(tags=[TagAssociationClass(tag="urn:li:tag:pii")]),
    OwnershipClass(owners=[OwnerClass(owner="urn:li:corpuser:jdoe", type=OwnershipTypeClass.DATAOWNER)]),
]
mcps = [MetadataChangeProposalWrapper(entityUrn=URN, aspect=aspect) for aspect in aspects]

# openapi_ingestion=False pins the Rest.li endpoints, as the datahub-rest sink does by default: left
# None, a /config advertising GMS >= 1.0.1 would switch this SDK-mode emitter to /openapi/v3/entity/*.
# emit_mode is pinned so DATAHUB_EMIT_MODE in the environment cannot change the "async" field.
with DatahubRestEmitter(gms_server=gms_url, token=token, openapi_ingestion=False) as emitter:
    emitter.test_connection()
    if mode == "single":
        for mcp in mcps:
            emitter.emit_mcp(mcp, emit_mode=EmitMode.SYNC_PRIMARY)
            print(json.dumps({"urn": mcp.entityUrn, "aspect": mcp.aspectName, "changeType": mcp.changeType}), flush=True)
    else:
        emitter.emit_mcps(mcps, emit_mode=EmitMode.SYNC_PRIMARY)
        for mcp in mcps:
            print(json.dumps({"urn": mcp.entityUrn, "aspect": mcp.aspectName, "changeType": mcp.changeType}), flush=True)
