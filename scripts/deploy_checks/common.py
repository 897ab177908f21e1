"""What the project is, the report, and helpers every check shares.

Part of scripts/k8s_checks.py (see its docstring).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml


SERVICES = {
    # Deployment / compose service / binary -> config section holding its listen address.
    "gateway": "gateway",
    "pre-transformer": "pre_transformer",
    "post-transformer": "post_transformer",
    "consumer-api": "consumer_api",
}


# Services with a separate admin listener (the gateway's admin API, /metrics), the container port
# named `admin`: the config key of its address. The public `http` port serves neither.
ADMIN_LISTEN = {
    "gateway": "gateway.admin_listen",
    "consumer-api": "consumer_api.admin_listen",
}


ADMIN_PORT_NAME = "admin"


# Who may reach an admin port: Prometheus' namespace, and pods of metastream's namespace carrying
# the operator label (k8s/base/networkpolicies.yaml, allow-admin).
ADMIN_NAMESPACES = {"monitoring"}


OPERATOR_LABEL = ("metastream.io/operator", "true")


# Paths that must never be routed at the edge (Ingress, dev nginx, compose nginx).
ADMIN_PATHS = ["/v1", "/v1/", "/v1/sources", "/v1/sources/jira", "/v1/operations", "/v1/keys", "/v1/audit",
               "/v1/dead-letters", "/metrics", "/metrics/"]


# Services whose replicas are members of Kafka consumer groups: more replicas than partitions idle
# (a consumer-api replica without partitions would answer its share of /consume calls with nothing).
PARTITION_BOUND = {"pre-transformer", "post-transformer", "consumer-api"}


# The workspace's other binaries, without a Deployment: the CLI in the image, the test tools in
# the Dockerfile's `tools` target.
TOOLS = {
    "metastream-services": "the four services in one binary (crates/services): the image's /usr/local/bin/<service> are links to it; `metastream-services <service>` also works",
    "metastream": "the admin CLI (crates/cli): `kubectl run ... --labels=metastream.io/operator=true --image=<metastream image> -- metastream --url http://gateway:9081 sources ...`",
    "metastream-loadgen": "the load generator (crates/loadgen), in the `tools` image: `kubectl run ... --image=<metastream tools image> -- metastream-loadgen --url http://gateway:8081`",
    "metastream-faults": "the fault-injection suite (crates/faults): runs beside a checkout (`make test-faults`); in the `tools` image",
}


# Transformer -> (the config key of its consumer group, the config key of its input topic).
TRANSFORMERS = {
    "pre-transformer": ("pre_transformer.group_id", "kafka.topics.ingest"),
    "post-transformer": ("post_transformer.group_id", "kafka.topics.processed"),
}


# Maps in config/default.yaml whose keys are free (librdkafka properties).
FREE_MAPS = {"kafka.properties", "kafka.producer_properties", "kafka.consumer_properties"}


# Environment variables the binaries read themselves (besides METASTREAM__*), found by scanning
# crates/*/src for env::var("..."), plus those read by libraries (tracing's EnvFilter, the
# OpenTelemetry SDK). "set": every service container must set it. "default": optional, with the
# default named.
KNOWN_ENV = {
    "METASTREAM_ENV": ("set", "selects config/<env>.yaml"),
    "METASTREAM_CONFIG_DIR": ("set", "where the ConfigMap is mounted (default `config`, relative)"),
    "HOSTNAME": ("runtime", "set by the container runtime (the pod name)"),
    "KUBERNETES_SERVICE_HOST": ("runtime", "set by Kubernetes in every pod (the pulse names an instance by its pod there)"),
    "RUST_LOG": ("default", "telemetry.log_level"),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("default", "telemetry.otlp_endpoint; unset: no trace export"),
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ("default", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": ("default", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    "OTEL_EXPORTER_OTLP_PROTOCOL": ("default", "http/protobuf; grpc for OTLP/gRPC"),
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": ("default", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": ("default", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    "OTEL_SERVICE_NAME": ("set", "the service's name in traces"),
    "OTEL_RESOURCE_ATTRIBUTES": ("set", "pod and namespace in traces"),
}


# Kinds without a built-in schema (CRDs): skipped by the schema validation, by name, and said so.
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}


# Third-party infrastructure images allowed to miss some container rules, each with its reason.
# Only images that are not metastream's may be listed. Empty: apache/kafka and redis run with the
# full restricted profile (overlays/dev starts Kafka without the image's own scripts for that).
HARDENING_EXCEPTIONS: dict[str, tuple[set[str], str]] = {
    # "image-prefix": ({"readOnlyRootFilesystem"}, "why"),
}


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}


class Report:
    def __init__(self) -> None:
        self.passed = self.failed = self.skipped = 0

    def result(self, name: str, problems: list[str], note: str = "") -> None:
        if problems:
            self.failed += 1
            print(f"FAIL  {name}")
            for p in problems:
                print(f"        - {p}")
        else:
            self.passed += 1
            print(f"ok    {name}" + (f"  ({note})" if note else ""))
        sys.stdout.flush()

    def skip(self, name: str, reason: str) -> None:
        self.skipped += 1
        print(f"SKIP  {name}: {reason}")
        sys.stdout.flush()


def load_yaml(path: Path):
    with open(path) as f:
        return yaml.safe_load(f)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def get_path(d: dict, dotted: str):
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def config_key_of_env(name: str, defaults: dict) -> tuple[str | None, str]:
    """METASTREAM__KAFKA__PARTITIONS -> ("kafka.partitions", ""), or (None, why not)."""
    parts = name[len("METASTREAM__"):].lower().split("__")
    cur, path = defaults, []
    for i, part in enumerate(parts):
        dotted = ".".join(path)
        if dotted in FREE_MAPS:
            return ".".join(path + parts[i:]), ""
        if not isinstance(cur, dict) or part not in cur:
            return None, f"no key `{'.'.join(path + [part])}` in config/default.yaml"
        cur, path = cur[part], path + [part]
    if ".".join(path) in FREE_MAPS or isinstance(cur, dict):
        return None, f"`{'.'.join(path)}` is a section, not a value"
    return ".".join(path), ""


def coerce(value: str, like):
    if isinstance(like, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def effective_config(root: Path, env: dict[str, str]) -> dict:
    """config/default.yaml, then config/$METASTREAM_ENV.yaml, then METASTREAM__* (like the services)."""
    cfg = load_yaml(root / "config/default.yaml")
    defaults = copy.deepcopy(cfg)
    name = env.get("METASTREAM_ENV")
    if name and (root / f"config/{name}.yaml").is_file():
        cfg = deep_merge(cfg, load_yaml(root / f"config/{name}.yaml") or {})
    for k, v in env.items():
        if not k.startswith("METASTREAM__") or v is None:
            continue
        key, _ = config_key_of_env(k, defaults)
        if key is None:
            continue
        parts = key.split(".")
        cur = cfg
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = coerce(v, get_path(defaults, key))
    return cfg


def port_of(listen: str) -> int:
    return int(str(listen).rsplit(":", 1)[1])


def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    if kind in WORKLOAD_KINDS:
        return (spec.get("template") or {}).get("spec")
    return None


def pod_labels(obj: dict) -> dict:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}


def selector_matches(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def container_env(obj: dict, container: dict, objects: list[dict], secret_template: dict) -> dict[str, str | None]:
    """The environment a container gets: envFrom ConfigMaps/Secrets in order, then env.

    `secret_template` is k8s/base/secret.template.yaml: it stands for a required Secret that the
    manifests do not hold (overlays/prod), its example values read as the Secret's."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    env: dict[str, str | None] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            cm = by_name.get(("ConfigMap", src["configMapRef"]["name"]))
            for k, v in ((cm or {}).get("data") or {}).items():
                env[prefix + k] = v
        if "secretRef" in src:
            ref = src["secretRef"]
            sec = by_name.get(("Secret", ref["name"]))
            if sec is None and not ref.get("optional") and ref["name"] == secret_template.get("metadata", {}).get("name"):
                for k, v in (secret_template.get("stringData") or {}).items():
                    env[prefix + k] = v  # the template's example value
            for k in ((sec or {}).get("stringData") or {}) | ((sec or {}).get("data") or {}):
                env[prefix + k] = None  # a secret value: present, not read here
    for e in container.get("env") or []:
        env[e["name"]] = e.get("value") if "value" in e else None
    return env


def render(kustomize_dir: Path) -> tuple[list[dict] | None, str]:
    """`kubectl kustomize DIR`, kept in DIR/rendered.yaml for a look after the run."""
    proc = subprocess.run(["kubectl", "kustomize", str(kustomize_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, proc.stderr.strip() or proc.stdout.strip()
    (kustomize_dir / "rendered.yaml").write_text(proc.stdout)
    return [d for d in yaml.safe_load_all(proc.stdout) if d], ""


SAMPLE_PATHS = ["/ingest", "/ingest/", "/ingest/batch", "/ingest/batch/x", "/ingestx", "/openapi.json", "/openapi.jsonx",
                "/consume", "/consume/", "/consume/x", "/consumex", "/metadata/", "/metadata/jira/12345",
                "/hooks/github", "/hooks/jira/x", "/api/v1/lineage", "/api/v1/lineagex", "/api/v1/",
                "/datahub/dh/config", "/datahub/dh/aspects", "/datahubx", "/cloudevents", "/cloudevents/x",
                "/", "/healthz", "/readyz", "/other", "/_edge_error/internal"] + ADMIN_PATHS
