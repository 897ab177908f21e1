#!/usr/bin/env python3
"""metastream's deployment checks, run by scripts/k8s-validate.sh (make k8s-validate, in make test).

Renders every Kubernetes overlay with `kubectl kustomize`, validates every object offline against
the Kubernetes JSON schemas (kubernetes-validate), then checks what the schemas cannot know:

  * every container (init containers and Jobs too, Kafka and Redis of overlays/dev too) has CPU and
    memory requests and limits and a restricted security context (non-root, read-only root
    filesystem, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault); every
    long-running container has liveness and readiness probes;
  * the transformers' and the consumer-api's autoscalers (HPA or KEDA ScaledObject) never exceed
    kafka.partitions (their replicas are consumer-group members);
  * terminationGracePeriodSeconds is above shutdown.deadline_ms (plus any preStop sleep);
  * every METASTREAM__* variable set anywhere is a real key of config/default.yaml, every variable
    the binaries read is set or has a default, every referenced ConfigMap/Secret exists;
  * the topic Job's script, run here against a stub kafka-topics.sh, creates the configured topics;
  * the Ingress routes like the dev stack's nginx; the NetworkPolicies let the flow through;
  * neither the Ingress nor the nginx edges route the admin API (/v1/...) or /metrics, nor send
    anything to an `admin` port; every container with an `admin` port is isolated by a
    NetworkPolicy that opens that port only to the monitoring namespace and operator pods;
  * Prometheus (ServiceMonitor, compose's prometheus.yml) scrapes each service's /metrics where
    it serves it: the `admin` port when the service has one, and the NetworkPolicies let it;
  * deploy/docker-compose.yml passes `docker compose config` and agrees with the manifests;
  * deploy/Dockerfile builds what CI builds (toolchain, cargo invocation, binaries).

Prints one line per check and ends with `N passed, M failed`; exits 1 on any failure.
Only Python's standard library plus PyYAML and kubernetes-validate (installed by the shell script).
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

# --- what the project is --------------------------------------------------------------------------

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

# --- reporting --------------------------------------------------------------------------------------


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


# --- helpers ----------------------------------------------------------------------------------------


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


# --- the checks --------------------------------------------------------------------------------------


def check_config_copies(root: Path, rep: Report) -> None:
    src, dst = root / "config", root / "k8s/base/config"
    problems = []
    src_files = sorted(p.name for p in src.glob("*.yaml"))
    dst_files = sorted(p.name for p in dst.glob("*.yaml"))
    if src_files != dst_files:
        problems.append(f"config/ has {src_files}, k8s/base/config/ has {dst_files}")
    for name in set(src_files) & set(dst_files):
        if (src / name).read_bytes() != (dst / name).read_bytes():
            problems.append(f"k8s/base/config/{name} differs from config/{name}")
    kust = load_yaml(root / "k8s/base/kustomization.yaml")
    listed = []
    for gen in kust.get("configMapGenerator") or []:
        if gen["name"] == "metastream-config":
            listed = sorted(Path(f).name for f in gen.get("files") or [])
    if listed != src_files:
        problems.append(f"the metastream-config generator lists {listed}, config/ has {src_files}")
    if problems:
        problems.append("run `scripts/k8s-validate.sh sync-config` (kustomize reads only files below k8s/base)")
    rep.result("config: k8s/base/config/ is a copy of config/ (the ConfigMap is made from it)", problems)


def check_schemas(name: str, objects: list[dict], version: str, rep: Report) -> None:
    import kubernetes_validate  # installed in var/venv by scripts/k8s-validate.sh

    problems, skipped, count = [], {}, 0
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        ident = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        if key in CRD_KINDS:
            skipped[f"{key[1]} ({key[0]})"] = skipped.get(f"{key[1]} ({key[0]})", 0) + 1
            # No schema: at least the shape every object has.
            if not (obj.get("metadata") or {}).get("name") or not isinstance(obj.get("spec"), dict):
                problems.append(f"{ident}: needs metadata.name and a spec")
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
            count += 1
        except Exception as err:  # ValidationError, SchemaNotFoundError, ...
            msg = getattr(err, "message", None) or str(err).splitlines()[0]
            path = "/".join(str(p) for p in getattr(err, "path", []) or [])
            problems.append(f"{ident}: {msg}" + (f" (at {path})" if path else ""))
    note = f"{count} objects against Kubernetes {version} schemas, strict"
    if skipped:
        note += "; no built-in schema, skipped by name: " + ", ".join(f"{n}x {k}" for k, n in sorted(skipped.items()))
    rep.result(f"{name}: schema validation", problems, note)


def check_containers(name: str, objects: list[dict], rep: Report) -> None:
    problems, count, waived = [], 0, []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        kind, oname = obj["kind"], obj["metadata"]["name"]
        psc = spec.get("securityContext") or {}
        groups = [("initContainers", c) for c in spec.get("initContainers") or []]
        groups += [("containers", c) for c in spec.get("containers") or []]
        for group, c in groups:
            count += 1
            where = f"{kind}/{oname} {group[:-1]} {c['name']}"
            image = c.get("image", "")
            exempt: set[str] = set()
            for prefix, (rules, reason) in HARDENING_EXCEPTIONS.items():
                if image.startswith(prefix) and not image.split("/")[-1].startswith("metastream"):
                    exempt |= rules
                    waived.append(f"{where}: {', '.join(sorted(rules))} ({reason})")
            sc = c.get("securityContext") or {}

            def rule(key: str, ok: bool, msg: str) -> None:
                if not ok and key not in exempt:
                    problems.append(f"{where}: {msg}")

            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    rule("resources", r in (res.get(part) or {}), f"no {part}.{r}")
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            rule("runAsNonRoot", non_root is True, "runAsNonRoot is not true")
            rule("runAsNonRoot", uid != 0, "runAsUser is 0")
            rule("readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
            rule("allowPrivilegeEscalation", sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
            rule("privileged", sc.get("privileged") is not True, "privileged")
            drop = ((sc.get("capabilities") or {}).get("drop")) or []
            rule("capabilities", "ALL" in drop, "capabilities.drop lacks ALL")
            rule("capabilities", not ((sc.get("capabilities") or {}).get("add")), "adds capabilities")
            seccomp = ((sc.get("seccompProfile") or psc.get("seccompProfile")) or {}).get("type")
            rule("seccompProfile", seccomp in ("RuntimeDefault", "Localhost"), "no seccompProfile RuntimeDefault")
            if kind in LONG_RUNNING and group == "containers":
                for probe in ("livenessProbe", "readinessProbe"):
                    rule("probes", probe in c, f"no {probe}")
            rule("image", ":" in image.split("/")[-1] or "@" in image, f"image `{image}` has no tag")
            rule("image", not image.endswith(":latest"), f"image `{image}` uses :latest")
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            problems.append(f"{kind}/{oname}: uses the host's network, PID or IPC namespace")
    note = f"{count} containers" + (f"; waived: {'; '.join(waived)}" if waived else "; no exceptions")
    rep.result(f"{name}: containers have limits, probes and a restricted security context", problems, note)


def service_containers(objects: list[dict]):
    for obj in objects:
        if obj.get("kind") == "Deployment" and obj["metadata"]["name"] in SERVICES:
            spec = pod_spec(obj)
            for c in spec.get("containers") or []:
                if c["name"] == obj["metadata"]["name"]:
                    yield obj, spec, c


def check_grace(name: str, objects: list[dict], root: Path, rep: Report, secret_template: dict) -> None:
    problems, notes = [], []
    found = set()
    for obj, spec, c in service_containers(objects):
        svc = obj["metadata"]["name"]
        found.add(svc)
        cfg = effective_config(root, container_env(obj, c, objects, secret_template))
        deadline_s = cfg["shutdown"]["deadline_ms"] / 1000
        sleep = ((((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep")) or {}).get("seconds", 0)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if not grace > deadline_s + sleep:
            problems.append(f"{svc}: terminationGracePeriodSeconds {grace} <= shutdown.deadline_ms/1000 ({deadline_s:g})"
                            + (f" + preStop sleep {sleep}" if sleep else ""))
        notes.append(f"{svc} {grace}s > {deadline_s:g}s" + (f"+{sleep}s" if sleep else ""))
    missing = set(SERVICES) - found
    if missing:
        problems.append(f"no Deployment for {sorted(missing)}")
    rep.result(f"{name}: terminationGracePeriodSeconds above the shutdown deadline", problems, ", ".join(notes))


def check_scaling(name: str, objects: list[dict], root: Path, rep: Report, secret_template: dict) -> None:
    problems, notes = [], []
    deployments = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Deployment"}
    scalers: dict[str, list[str]] = {}
    for obj in objects:
        if obj.get("kind") == "HorizontalPodAutoscaler":
            target = obj["spec"]["scaleTargetRef"]["name"]
            lo, hi = obj["spec"].get("minReplicas", 1), obj["spec"]["maxReplicas"]
            scalers.setdefault(target, []).append(f"HPA {obj['metadata']['name']}")
            kind_desc = f"HPA {target}"
        elif obj.get("kind") == "ScaledObject":
            target = obj["spec"]["scaleTargetRef"]["name"]
            lo, hi = obj["spec"].get("minReplicaCount", 0), obj["spec"].get("maxReplicaCount", 100)
            scalers.setdefault(target, []).append(f"ScaledObject {obj['metadata']['name']}")
            kind_desc = f"ScaledObject {target}"
        else:
            continue
        if target not in deployments:
            problems.append(f"{kind_desc}: no Deployment {target}")
            continue
        if lo > hi:
            problems.append(f"{kind_desc}: min {lo} > max {hi}")
        dep = deployments[target]
        c = next(c for c in pod_spec(dep)["containers"])
        env = container_env(dep, c, objects, secret_template)
        cfg = effective_config(root, env)
        if target in PARTITION_BOUND:
            partitions = cfg["kafka"]["partitions"]
            if hi > partitions:
                problems.append(f"{kind_desc}: max replicas {hi} > kafka.partitions {partitions}")
            notes.append(f"{target} max {hi} <= {partitions} partitions")
            if obj["kind"] == "ScaledObject" and target in TRANSFORMERS:
                group_key, topic_key = TRANSFORMERS[target]
                for trig in obj["spec"].get("triggers") or []:
                    if trig.get("type") != "kafka":
                        continue
                    md = trig.get("metadata") or {}
                    if md.get("consumerGroup") != get_path(cfg, group_key):
                        problems.append(f"{kind_desc}: consumerGroup {md.get('consumerGroup')} is not {group_key} = {get_path(cfg, group_key)}")
                    if md.get("topic") != get_path(cfg, topic_key):
                        problems.append(f"{kind_desc}: topic {md.get('topic')} is not {topic_key} = {get_path(cfg, topic_key)}")
                    env_var = md.get("bootstrapServersFromEnv")
                    if env_var and env_var not in env:
                        problems.append(f"{kind_desc}: bootstrapServersFromEnv {env_var} is not in {target}'s environment")
                    if not env_var and not md.get("bootstrapServers"):
                        problems.append(f"{kind_desc}: no bootstrap servers")
        if dep["spec"].get("replicas") is not None:
            problems.append(f"Deployment {target}: sets spec.replicas although {kind_desc} owns the count")
    for target, owners in scalers.items():
        if len(owners) > 1:
            problems.append(f"{target} has {len(owners)} autoscalers, which would fight: {owners}")
    for svc in SERVICES:
        if svc not in scalers:
            problems.append(f"{svc}: no HorizontalPodAutoscaler or ScaledObject")
    rep.result(f"{name}: autoscaling (transformers and consumer-api never above kafka.partitions)", problems, "; ".join(notes))


def scan_env_reads(root: Path) -> set[str]:
    """Variables read with env::var in the crates the services are built from (not the CLI's)."""
    found = set()
    pat = re.compile(r"env::var(?:_os)?\(\s*\"([A-Za-z0-9_]+)\"")
    for crate in (root / "crates").iterdir():
        manifest = crate / "Cargo.toml"
        if not manifest.is_file():
            continue
        bins = {b["name"] for b in tomllib.loads(manifest.read_text()).get("bin") or []}
        if bins and bins <= set(TOOLS):
            continue
        for rs in crate.glob("src/**/*.rs"):
            found |= set(pat.findall(rs.read_text(errors="replace")))
    return found


def check_env(name: str, objects: list[dict], root: Path, rep: Report, secret_template: dict, extra_secret_keys=()) -> None:
    problems = []
    defaults = load_yaml(root / "config/default.yaml")
    by_name = {(o["kind"], o["metadata"]["name"]) for o in objects}
    seen_keys: set[str] = set()
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            # References must resolve.
            for src in c.get("envFrom") or []:
                for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if ref in src and (kind, src[ref]["name"]) not in by_name and not src[ref].get("optional"):
                        if kind == "Secret":
                            continue  # created outside the manifests (secret.template.yaml); optional or not
                        problems.append(f"{where}: {kind} {src[ref]['name']} does not exist")
            env = container_env(obj, c, objects, secret_template)
            for k in env:
                if k.startswith("METASTREAM__"):
                    seen_keys.add(k)
            if env.get("METASTREAM_ENV") and not (root / f"config/{env['METASTREAM_ENV']}.yaml").is_file():
                problems.append(f"{where}: METASTREAM_ENV={env['METASTREAM_ENV']} but config/{env['METASTREAM_ENV']}.yaml does not exist")
        for v in spec.get("volumes") or []:
            if "configMap" in v and ("ConfigMap", v["configMap"]["name"]) not in by_name and not v["configMap"].get("optional"):
                problems.append(f"{where}: volume {v['name']}: ConfigMap {v['configMap']['name']} does not exist")
    for k in sorted(seen_keys | set(extra_secret_keys)):
        key, why = config_key_of_env(k, defaults)
        if key is None:
            problems.append(f"{k}: {why}")
    # What the binaries read, each set in every service container or defaulted.
    reads = scan_env_reads(root) | {k for k, (how, _) in KNOWN_ENV.items() if how != "runtime"}
    unknown = sorted(r for r in reads if r not in KNOWN_ENV and not r.startswith("METASTREAM__"))
    for r in unknown:
        problems.append(f"the services read {r}, which scripts/k8s_checks.py does not know: add it to KNOWN_ENV (set or default) and to the manifests")
    for obj, spec, c in service_containers(objects):
        env = container_env(obj, c, objects, secret_template)
        for var, (how, _) in KNOWN_ENV.items():
            if how == "set" and var not in env:
                problems.append(f"{obj['metadata']['name']}: {var} is not set")
        mounts = {m["mountPath"] for m in c.get("volumeMounts") or []}
        cfg_dir = env.get("METASTREAM_CONFIG_DIR")
        if cfg_dir and cfg_dir not in mounts:
            problems.append(f"{obj['metadata']['name']}: METASTREAM_CONFIG_DIR={cfg_dir} is not a mounted volume")
        cfg = effective_config(root, env)
        svc = obj["metadata"]["name"]
        section = SERVICES[svc]
        want = {"http": (port_of(cfg[section]["listen"]), f"{section}.listen")}
        if svc in ADMIN_LISTEN:
            admin = get_path(cfg, ADMIN_LISTEN[svc])
            if admin is None:
                problems.append(f"{svc}: config/default.yaml has no {ADMIN_LISTEN[svc]}")
            else:
                want[ADMIN_PORT_NAME] = (port_of(admin), ADMIN_LISTEN[svc])
        got = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        if got != {n: port for n, (port, _) in want.items()}:
            problems.append(f"{svc}: container ports {got} but " + ", ".join(
                f"{key} is {get_path(cfg, key)} (port `{n}`)" for n, (_, key) in want.items()))
        if c.get("command") != [f"/usr/local/bin/{obj['metadata']['name']}"]:
            problems.append(f"{obj['metadata']['name']}: command {c.get('command')} does not run its binary")
    defaulted = ", ".join(f"{k} ({d})" for k, (h, d) in KNOWN_ENV.items() if h == "default")
    rep.result(f"{name}: environment (METASTREAM__* are config keys; read variables set or defaulted)",
               problems, f"{len(seen_keys)} METASTREAM__ variables; defaulted: {defaulted}")


def check_topics_job(name: str, objects: list[dict], root: Path, rep: Report, secret_template: dict) -> None:
    problems = []
    job = next((o for o in objects if o.get("kind") == "Job" and o["metadata"]["name"] == "metastream-create-topics"), None)
    if job is None:
        rep.result(f"{name}: topic Job creates the configured topics", ["no Job metastream-create-topics"])
        return
    spec = pod_spec(job)
    c = spec["containers"][0]
    env = {k: v for k, v in container_env(job, c, objects, secret_template).items() if v is not None}
    cfg = effective_config(root, env)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts") or []}
    script_path = c["command"][-1]
    script_dir, script_name = script_path.rsplit("/", 1)
    shell = shutil.which("busybox")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The script and config as the pod sees them: from the rendered ConfigMaps.
        for mount, vol in mounts.items():
            if "configMap" not in vol:
                continue
            cm = by_name.get(("ConfigMap", vol["configMap"]["name"]))
            if cm is None:
                problems.append(f"ConfigMap {vol['configMap']['name']} missing")
                continue
            dest = tmp / "fs" / mount.lstrip("/")
            dest.mkdir(parents=True, exist_ok=True)
            for k, v in (cm.get("data") or {}).items():
                (dest / k).write_text(v)
        stub = tmp / "bin"
        stub.mkdir()
        log = tmp / "calls.log"
        (stub / "kafka-topics.sh").write_text(
            "#!/bin/sh\n"
            f"echo \"$*\" >> {log}\n"
            "case \"$*\" in *--describe*) t=''; prev=''; for a; do [ \"$prev\" = --topic ] && t=$a; prev=$a; done;\n"
            f"  printf 'Topic: %s\\tTopicId: x\\tPartitionCount: {cfg['kafka']['partitions']}\\tReplicationFactor: 1\\n' \"$t\";; esac\n")
        (stub / "kafka-topics.sh").chmod(0o755)
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env,
                   "METASTREAM_CONFIG_DIR": str(tmp / "fs" / env.get("METASTREAM_CONFIG_DIR", "/app/config").lstrip("/")),
                   "KAFKA_BIN": str(stub), "WAIT_SECONDS": "0", "TMPDIR": str(tmp), "LOG_DIR": str(tmp / "logs")}
        script = tmp / "fs" / script_dir.lstrip("/") / script_name
        if not script.is_file():
            rep.result(f"{name}: topic Job creates the configured topics", [f"{script_path} is not in a mounted ConfigMap"])
            return
        cmd = [shell, "sh", str(script)] if shell else ["sh", str(script)]
        proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=60)
        calls = log.read_text().splitlines() if log.exists() else []
        if proc.returncode != 0:
            problems.append(f"script exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-400:]}")
        creates = [c_ for c_ in calls if "--create" in c_]
        t = cfg["kafka"]["topics"]
        want = [t["ingest"], t["processed"], t["output"], t["dead_letter"]]
        got = []
        for line in creates:
            args = line.split()
            def arg(flag):
                return args[args.index(flag) + 1] if flag in args else None
            got.append(arg("--topic"))
            if arg("--partitions") != str(cfg["kafka"]["partitions"]):
                problems.append(f"{arg('--topic')}: --partitions {arg('--partitions')}, config says {cfg['kafka']['partitions']}")
            if arg("--replication-factor") != str(cfg["kafka"]["replication_factor"]):
                problems.append(f"{arg('--topic')}: --replication-factor {arg('--replication-factor')}, config says {cfg['kafka']['replication_factor']}")
            if arg("--bootstrap-server") != cfg["kafka"]["bootstrap_servers"]:
                problems.append(f"--bootstrap-server {arg('--bootstrap-server')}, config says {cfg['kafka']['bootstrap_servers']}")
            if "--if-not-exists" not in args:
                problems.append("--create without --if-not-exists")
            protocol = env.get("METASTREAM__KAFKA__PROPERTIES__SECURITY_PROTOCOL")
            if protocol and "--command-config" not in args:
                problems.append(f"security.protocol {protocol} but no --command-config")
        if got != want:
            problems.append(f"created {got}, config names {want}")
    shell_name = "busybox sh (as in the image)" if shell else "the system sh (busybox not installed)"
    rep.result(f"{name}: topic Job creates the configured topics", problems,
               f"{len(want)} topics x {cfg['kafka']['partitions']} partitions, replication {cfg['kafka']['replication_factor']}; run with {shell_name} and a stub kafka-topics.sh")


SAMPLE_PATHS = ["/ingest", "/ingest/", "/ingest/batch", "/ingest/batch/x", "/ingestx", "/openapi.json", "/openapi.jsonx",
                "/consume", "/consume/", "/consume/x", "/consumex", "/metadata/", "/metadata/jira/12345",
                "/hooks/github", "/hooks/jira/x", "/api/v1/lineage", "/api/v1/lineagex", "/api/v1/",
                "/datahub/dh/config", "/datahub/dh/aspects", "/datahubx", "/cloudevents", "/cloudevents/x",
                "/", "/healthz", "/readyz", "/other", "/_edge_error/internal"] + ADMIN_PATHS
# Not compared: /metadata without its slash, which nginx's `location /metadata/` does not match and
# an Ingress Prefix path `/metadata/` does (the service then answers 404 itself).


def nginx_routes(path: Path) -> list[tuple[str, str, str | None]]:
    routes = []
    upstream_names = {"gateway": "gateway", "consumer_api": "consumer-api"}
    for m in re.finditer(r"location\s+(=\s*)?(\S+)\s*\{([^}]*)\}", path.read_text()):
        exact, loc, body = bool(m.group(1)), m.group(2), m.group(3)
        up = re.search(r"proxy_pass\s+http://([A-Za-z_]+)", body)
        routes.append(("exact" if exact else "prefix", loc, upstream_names.get(up.group(1), up.group(1)) if up else None))
    return routes


def route_nginx(routes, p: str):
    for kind, loc, up in routes:
        if kind == "exact" and p == loc:
            return up
    best = None
    for kind, loc, up in routes:
        if kind == "prefix" and p.startswith(loc) and (best is None or len(loc) > len(best[0])):
            best = (loc, up)
    return best[1] if best else None


def route_ingress(ing: dict, p: str):
    best = None
    for rule in ing["spec"].get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            want, kind = path["path"], path["pathType"]
            svc = path["backend"]["service"]["name"]
            if kind == "Exact":
                ok = p == want
            else:
                w = [x for x in want.split("/") if x]
                g = [x for x in p.split("/") if x]
                ok = g[: len(w)] == w
            if ok:
                score = (len(want.rstrip("/")), kind == "Exact")
                if best is None or score > best[0]:
                    best = (score, svc)
    return best[1] if best else None


def check_ingress(name: str, objects: list[dict], root: Path, rep: Report) -> None:
    problems = []
    ings = [o for o in objects if o.get("kind") == "Ingress"]
    if len(ings) != 1:
        rep.result(f"{name}: Ingress routes like the dev stack's nginx", [f"{len(ings)} Ingress objects, expected 1"])
        return
    edges = {"deploy/nginx/metastream.conf.in": nginx_routes(root / "deploy/nginx/metastream.conf.in"),
             "deploy/compose/edge.conf": nginx_routes(root / "deploy/compose/edge.conf")}
    services = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}
    for rule in ings[0]["spec"].get("rules") or []:
        for path in (rule.get("http") or {}).get("paths") or []:
            b = path["backend"]["service"]
            svc = services.get(b["name"])
            if svc is None:
                problems.append(f"path {path['path']}: no Service {b['name']}")
            elif "name" in b.get("port", {}) and b["port"]["name"] not in [p.get("name") for p in svc["spec"]["ports"]]:
                problems.append(f"path {path['path']}: Service {b['name']} has no port {b['port']['name']}")
    for p in SAMPLE_PATHS:
        k8s = route_ingress(ings[0], p)
        for edge, routes in edges.items():
            ng = route_nginx(routes, p)
            if ng != k8s:
                problems.append(f"{p}: Ingress -> {k8s or '404'}, {edge} -> {ng or '404'}")
    rep.result(f"{name}: Ingress routes like the dev stack's nginx and the compose edge", problems,
               f"{len(SAMPLE_PATHS)} paths compared")


def endpoint_port(value: str | None, default: int) -> int:
    """The port of `host:port[,host:port]` or of a redis:// URL."""
    m = re.search(r":(\d+)(?:/|,|$)", value or "")
    return int(m.group(1)) if m else default


def check_network(name: str, objects: list[dict], root: Path, rep: Report, secret_template: dict) -> None:
    problems, notes = [], []
    pols = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    if not any(p["spec"].get("podSelector") == {} and not p["spec"].get("ingress") and not p["spec"].get("egress")
               and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"} for p in pols):
        problems.append("no default-deny policy (podSelector {}, Ingress and Egress, no rules)")

    def allows(labels: dict, direction: str, port) -> bool:
        for p in pols:
            if direction.capitalize() not in (p["spec"].get("policyTypes") or []):
                continue
            if not selector_matches(p["spec"].get("podSelector") or {}, labels):
                continue
            for r in p["spec"].get(direction) or []:
                ports = r.get("ports")
                if not ports or any(x.get("port") == port for x in ports):
                    return True
        return False

    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        pname, labels = obj["metadata"]["name"], pod_labels(obj)
        comp = labels.get("app.kubernetes.io/component")
        env = container_env(obj, spec["containers"][0], objects, secret_template)
        if comp in ("service", "create-topics"):
            cfg = effective_config(root, {k: v for k, v in env.items() if v is not None})
            kafka_port = endpoint_port(cfg["kafka"]["bootstrap_servers"], 9092)
            # In production the Redis URL is in the Secret: the template's example stands for it.
            redis_port = endpoint_port(cfg["redis"]["url"], 6379)
            if not allows(labels, "egress", 53):
                problems.append(f"{pname}: no egress to DNS")
            if not allows(labels, "egress", kafka_port):
                problems.append(f"{pname}: no egress to Kafka :{kafka_port}")
            if comp == "service":
                if not allows(labels, "egress", redis_port):
                    problems.append(f"{pname}: no egress to Redis :{redis_port}")
                if pname == "gateway":
                    notes.append(f"Kafka :{kafka_port}, Redis :{redis_port}")
        if pname in ("gateway", "consumer-api") and not allows(labels, "ingress", "http"):
            problems.append(f"{pname}: no ingress for clients on its http port")
        if comp == "kafka" and not allows(labels, "ingress", 9092):
            problems.append(f"{pname}: Kafka accepts no client traffic")
        if comp == "redis" and not allows(labels, "ingress", 6379):
            problems.append(f"{pname}: Redis accepts no client traffic")
    rep.result(f"{name}: NetworkPolicies deny by default and allow the flow", problems,
               f"{len(pols)} policies" + (f"; {notes[0]}" if notes else ""))


def admin_ports_of(obj: dict) -> list[tuple[str, int]]:
    """(container, containerPort) of every port named `admin` in a workload's pod."""
    spec = pod_spec(obj) or {}
    return [(c["name"], p["containerPort"])
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
            for p in c.get("ports") or [] if p.get("name") == ADMIN_PORT_NAME]


def check_admin_routes(name: str, objects: list[dict], root: Path, rep: Report) -> None:
    """Neither the Ingress nor the nginx edges route /v1/... or /metrics, or reach an admin port."""
    problems = []
    edges = {"deploy/nginx/metastream.conf.in": nginx_routes(root / "deploy/nginx/metastream.conf.in"),
             "deploy/compose/edge.conf": nginx_routes(root / "deploy/compose/edge.conf")}
    services = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}
    ings = [o for o in objects if o.get("kind") == "Ingress"]
    for ing in ings:
        iname = ing["metadata"]["name"]
        for p in ADMIN_PATHS:
            routed = route_ingress(ing, p)
            if routed:
                problems.append(f"Ingress/{iname} routes {p} to {routed}")
        backends = [("defaultBackend", (ing["spec"].get("defaultBackend") or {}).get("service"))]
        backends += [(path["path"], path["backend"].get("service"))
                     for rule in ing["spec"].get("rules") or [] for path in (rule.get("http") or {}).get("paths") or []]
        for where, b in backends:
            if not b:
                continue
            port = b.get("port") or {}
            svc = services.get(b["name"])
            admin_numbers = {sp["port"] for sp in (svc or {}).get("spec", {}).get("ports", []) if sp.get("name") == ADMIN_PORT_NAME}
            if port.get("name") == ADMIN_PORT_NAME or port.get("number") in admin_numbers:
                problems.append(f"Ingress/{iname} {where}: backend {b['name']} port {port} is an admin port")
    for edge, routes in edges.items():
        for p in ADMIN_PATHS:
            routed = route_nginx(routes, p)
            if routed:
                problems.append(f"{edge} routes {p} to {routed}")
    rep.result(f"{name}: no edge routes the admin API or /metrics, nor reaches an admin port", problems,
               f"{len(ADMIN_PATHS)} paths x {len(ings)} Ingress + 2 nginx edges")


def peer_is_admin_client(peer: dict) -> bool:
    """A NetworkPolicy peer that stands only for the monitoring namespace or operator pods."""
    if "ipBlock" in peer:
        return False
    ns, pods = peer.get("namespaceSelector"), peer.get("podSelector")
    if ns is not None:
        # A namespace named by kubernetes.io/metadata.name (set by the API server, not forgeable).
        ml = ns.get("matchLabels") or {}
        return not ns.get("matchExpressions") and set(ml) == {"kubernetes.io/metadata.name"} \
            and ml["kubernetes.io/metadata.name"] in ADMIN_NAMESPACES
    if pods is not None:
        return (pods.get("matchLabels") or {}).get(OPERATOR_LABEL[0]) == OPERATOR_LABEL[1]
    return False


def rule_covers_port(rule: dict, name: str, number: int) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for x in ports:
        p = x.get("port")
        if p is None or p == name or p == number:
            return True
        if isinstance(p, int) and x.get("endPort") and p <= number <= x["endPort"]:
            return True
    return False


def check_admin_policies(name: str, objects: list[dict], rep: Report) -> None:
    """Every container with an `admin` port: isolated for ingress, and each rule that lets traffic
    reach that port admits only the monitoring namespace and operator pods; someone may reach it."""
    problems, notes = [], []
    pols = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    found = set()
    for obj in objects:
        ports = admin_ports_of(obj)
        if not ports:
            continue
        oname, labels = obj["metadata"]["name"], pod_labels(obj)
        found.add(oname)
        selecting = [p for p in pols if "Ingress" in (p["spec"].get("policyTypes") or [])
                     and selector_matches(p["spec"].get("podSelector") or {}, labels)]
        if not selecting:
            problems.append(f"{obj['kind']}/{oname}: no NetworkPolicy isolates its pods for ingress: its admin port is open to all")
            continue
        for cname, number in ports:
            admitted = []
            for pol in selecting:
                for i, rule in enumerate(pol["spec"].get("ingress") or []):
                    if not rule_covers_port(rule, ADMIN_PORT_NAME, number):
                        continue
                    where = f"NetworkPolicy/{pol['metadata']['name']} ingress[{i}]"
                    peers = rule.get("from")
                    if not peers:
                        problems.append(f"{oname} {cname}:{number}: {where} admits every source to the admin port")
                        continue
                    for peer in peers:
                        if not peer_is_admin_client(peer):
                            problems.append(f"{oname} {cname}:{number}: {where} admits {json.dumps(peer, sort_keys=True)}, "
                                            f"neither a namespace in {sorted(ADMIN_NAMESPACES)} nor pods labelled "
                                            f"{OPERATOR_LABEL[0]}={OPERATOR_LABEL[1]}")
                    admitted.append(pol["metadata"]["name"])
            if not admitted:
                problems.append(f"{oname} {cname}:{number}: no NetworkPolicy lets the monitoring namespace or operators reach the admin port")
            notes.append(f"{oname}:{number} via {', '.join(sorted(set(admitted))) or '-'}")
    for svc in ADMIN_LISTEN:
        if svc not in found:
            problems.append(f"{svc}: no container port named `{ADMIN_PORT_NAME}` ({ADMIN_LISTEN[svc]})")
    rep.result(f"{name}: admin ports open only to the monitoring namespace and operator pods", problems, "; ".join(notes))


def check_scrape(name: str, objects: list[dict], rep: Report) -> None:
    """ServiceMonitors/PodMonitors scrape each service's /metrics on the port that serves it (`admin`
    when there is one, else `http`), never the public port of a service with an admin port; the
    NetworkPolicies let the monitoring namespace through."""
    monitors = [o for o in objects if o.get("kind") in ("ServiceMonitor", "PodMonitor")]
    label = f"{name}: Prometheus scrapes each service's /metrics where it is served"
    if not monitors:
        rep.result(label, [], "no ServiceMonitor or PodMonitor in this variant")
        return
    problems, notes = [], []
    pols = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    services = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Service"}
    deployments = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Deployment"}
    for svc in SERVICES:
        dep, service = deployments.get(svc), services.get(svc)
        if dep is None or service is None:
            problems.append(f"{svc}: no Deployment or Service")
            continue
        want = ADMIN_PORT_NAME if admin_ports_of(dep) else "http"
        labels = pod_labels(dep)
        svc_ports = {p.get("name") for p in service["spec"].get("ports") or []}
        scraped = []
        for m in monitors:
            if m["kind"] == "ServiceMonitor":
                if not selector_matches(m["spec"].get("selector") or {}, service["metadata"].get("labels") or {}):
                    continue
                scraped += [(m["metadata"]["name"], e.get("port"), e.get("path", "/metrics"))
                            for e in m["spec"].get("endpoints") or [] if e.get("port") in svc_ports]
            else:
                if not selector_matches(m["spec"].get("selector") or {}, labels):
                    continue
                cports = {p.get("name") for c in pod_spec(dep)["containers"] for p in c.get("ports") or []}
                scraped += [(m["metadata"]["name"], e.get("port"), e.get("path", "/metrics"))
                            for e in m["spec"].get("podMetricsEndpoints") or [] if e.get("port") in cports]
        for mname, port, path in scraped:
            if port != want or path != "/metrics":
                problems.append(f"{svc}: {mname} scrapes {path} on port `{port}`; /metrics is on `{want}`")
        if not any(port == want and path == "/metrics" for _, port, path in scraped):
            problems.append(f"{svc}: no monitor scrapes /metrics on port `{want}`")
        number = next((p["containerPort"] for c in pod_spec(dep)["containers"] for p in c.get("ports") or [] if p.get("name") == want), None)
        reachable = any(
            "Ingress" in (pol["spec"].get("policyTypes") or []) and selector_matches(pol["spec"].get("podSelector") or {}, labels)
            and any(rule_covers_port(r, want, number or -1) and any(
                (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") in ADMIN_NAMESPACES
                for peer in r.get("from") or []) for r in pol["spec"].get("ingress") or [])
            for pol in pols)
        if not reachable:
            problems.append(f"{svc}: no NetworkPolicy lets the monitoring namespace reach port `{want}`")
        notes.append(f"{svc} `{want}`")
    rep.result(label, problems, ", ".join(notes))


def check_images(root: Path, variants: dict[str, list[dict]], rep: Report) -> None:
    problems = []
    m = re.search(r'VERSION="\$\{KAFKA_VERSION:-([^}]+)\}"', (root / "scripts/kafka.sh").read_text())
    kafka_version = m.group(1) if m else None
    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    version = cargo["workspace"]["package"]["version"]
    base = load_yaml(root / "k8s/base/kustomization.yaml")
    tags = {i["name"]: i.get("newTag") for i in base.get("images") or []}
    if tags.get("metastream") != version:
        problems.append(f"k8s/base tags the metastream image {tags.get('metastream')}, the workspace version is {version}")
    images = set()
    for objs in variants.values():
        for o in objs:
            spec = pod_spec(o)
            for c in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
                images.add(c["image"])
    compose = (root / "deploy/docker-compose.yml").read_text()
    images |= set(re.findall(r"^\s*image:\s*(\S+)", compose, re.M))
    for img in sorted(images):
        if img.startswith("apache/kafka:") and kafka_version and img != f"apache/kafka:{kafka_version}":
            problems.append(f"{img}: scripts/kafka.sh runs Kafka {kafka_version}")
    rep.result("images: Kafka release same as scripts/kafka.sh, metastream tag = workspace version", problems,
               f"Kafka {kafka_version}, metastream {version}")


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Docker's rules, enough for an allow-list: the last matching pattern wins; a pattern matching a
    parent directory matches what is below it."""
    allowed = True
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        if p.startswith("**/"):
            hit = any(fnmatch.fnmatch(c.split("/")[-1], p[3:]) or fnmatch.fnmatch(c, p[3:]) for c in candidates)
        else:
            hit = any(fnmatch.fnmatch(c, p) for c in candidates)
        if hit:
            allowed = neg
    return allowed


def workspace_bins(root: Path) -> set[str]:
    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    bins = set()
    for member in cargo["workspace"]["members"]:
        manifest = tomllib.loads((root / member / "Cargo.toml").read_text())
        declared = [b["name"] for b in manifest.get("bin") or []]
        bins |= set(declared)
        if not declared and (root / member / "src/main.rs").is_file() and manifest.get("package", {}).get("autobins", True):
            bins.add(manifest["package"]["name"])
    return bins


def check_dockerfile(root: Path, rep: Report) -> None:
    problems, notes = [], []
    text = (root / "deploy/Dockerfile").read_text()
    # Toolchain: the same Rust as CI (the machine's rustc; no rust-toolchain file pins it otherwise).
    m = re.search(r"^ARG RUST_VERSION=(\S+)", text, re.M)
    want = m.group(1) if m else None
    # The build stage's base: `FROM rust:...`, or `FROM ${TOOLCHAIN_IMAGE}` whose default is the rust
    # image (scripts/image.sh passes a locally made base where no registry is reachable).
    toolchain_base = re.search(r"^ARG TOOLCHAIN_IMAGE=(\S+)", text, re.M)
    if toolchain_base and re.search(r"^FROM \$\{TOOLCHAIN_IMAGE\} AS toolchain$", text, re.M):
        text = text.replace("${TOOLCHAIN_IMAGE}", toolchain_base.group(1))
    if want is None or "FROM rust:${RUST_VERSION}-" not in text:
        problems.append("no `ARG RUST_VERSION` used by `FROM rust:${RUST_VERSION}-...`")
    for tc in ("rust-toolchain.toml", "rust-toolchain"):
        f = root / tc
        if f.is_file():
            ch = re.search(r'channel\s*=\s*"([^"]+)"', f.read_text())
            pinned = ch.group(1) if ch else f.read_text().strip()
            if want and not pinned.startswith(want):
                problems.append(f"{tc} pins {pinned}, the Dockerfile uses Rust {want}")
    rustc = shutil.which("rustc")
    if rustc and want:
        out = subprocess.run([rustc, "--version"], capture_output=True, text=True).stdout
        v = re.search(r"rustc (\d+\.\d+)", out)
        if v and v.group(1) != ".".join(want.split(".")[:2]):
            problems.append(f"Dockerfile builds with Rust {want}, CI's toolchain is {v.group(1)} ({out.strip()})")
        notes.append(f"Rust {want} = CI's {v.group(1) if v else '?'}")
    else:
        notes.append(f"Rust {want} (no rustc here to compare)")
    if "FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE}" in text and "ARG DEBIAN_RELEASE=bookworm" not in text:
        problems.append("the build stage is not Debian bookworm (CI's and the runtime's release)")
    # The cargo invocation: CI's (the Makefile's build flags) plus --release.
    builds = re.findall(r"^RUN cargo build (.*)$", text, re.M)
    if len(builds) != 1:
        problems.append(f"expected one `RUN cargo build ...`, found {len(builds)}")
    else:
        flags = set(builds[0].split())
        if flags != {"--release", "--workspace", "--bins"}:
            problems.append(f"`cargo build {builds[0]}` is not `cargo build --release --workspace --bins`")
        mk = root / "Makefile"
        if mk.is_file():
            mk_text = mk.read_text()
            rel = re.findall(r"^\t\$\(CARGO\) build (.*--release.*)$", mk_text, re.M)
            dbg = re.findall(r"^\t\$\(CARGO\) build (.*)$", mk_text, re.M)
            if rel and set(rel[0].split()) != flags:
                problems.append(f"the Makefile builds releases with `{rel[0]}`, the Dockerfile with `{builds[0]}`")
            elif dbg and set(dbg[0].split()) | {"--release"} != flags:
                problems.append(f"the Makefile builds with `{dbg[0]}`, the Dockerfile with `{builds[0]}` (beyond --release)")
        notes.append(f"cargo build {builds[0]}")
    for pkg in ("gcc", "g++", "make", "pkg-config", "libssl-dev", "zlib1g-dev"):
        if not re.search(rf"apt-get install[^\n]*(\\\n[^\n]*)*\s{re.escape(pkg)}(\s|$)", text):
            problems.append(f"the build stage does not install {pkg}")
    m = re.search(r"for bin in ([^;]+);", text)
    copied = set(m.group(1).split()) if m else set()
    bins = workspace_bins(root)
    if copied != bins:
        problems.append(f"the image gets {sorted(copied)}, the workspace builds {sorted(bins)}")
    if set(SERVICES) | set(TOOLS) != bins:
        problems.append(f"scripts/k8s_checks.py knows services {sorted(SERVICES)} and tools {sorted(TOOLS)}, "
                        f"the workspace builds {sorted(bins)}: a new service needs a Deployment, a tool an entry in TOOLS")
    # Runtime stage: non-root, no shell needed.
    final = text[text.rfind("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    base_image = re.search(r"^FROM\s+(\S+)", final.strip(), re.M).group(1)
    runtime_base = re.search(r"^ARG RUNTIME_IMAGE=(\S+)", text, re.M)
    if base_image == "${RUNTIME_IMAGE}" and runtime_base:
        base_image = runtime_base.group(1)
    if not (users and users[-1].split(":")[0] not in ("root", "0")) and not base_image.endswith(":nonroot"):
        problems.append("the runtime stage runs as root")
    for instr in ("ENTRYPOINT", "CMD"):
        for line in re.findall(rf"^{instr}\s+(.*)$", final, re.M):
            if not line.strip().startswith("["):
                problems.append(f"runtime {instr} in shell form needs a shell: {line}")
    if "COPY config/ /app/config/" not in final or "METASTREAM_CONFIG_DIR=/app/config" not in final:
        problems.append("the runtime stage does not put the configuration at /app/config (METASTREAM_CONFIG_DIR)")
    # .dockerignore lets the workspace in.
    ign = [l.strip() for l in (root / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    cargo = tomllib.loads((root / "Cargo.toml").read_text())
    for path in ["Cargo.toml", "Cargo.lock", "config/default.yaml"] + [f"{m}/Cargo.toml" for m in cargo["workspace"]["members"]] \
            + [str(p.relative_to(root)) for m in cargo["workspace"]["members"] for p in (root / m).rglob("*.rs")][:200]:
        if not dockerignore_allows(ign, path):
            problems.append(f".dockerignore keeps {path} out of the build context")
    for path in ["target/release/gateway", "var/venv/bin/python", ".git/HEAD"]:
        if dockerignore_allows(ign, path):
            problems.append(f".dockerignore lets {path} into the build context")
    notes.append(f"binaries {', '.join(sorted(bins))}")
    for tool, what in TOOLS.items():
        notes.append(f"{tool}: {what.split(':')[0]}")
    rep.result("Dockerfile: CI's toolchain and cargo invocation, every binary, non-root runtime without a shell", problems, "; ".join(notes))


def check_compose(root: Path, compose_cmd: list[str] | None, skip_reason: str, dev: list[dict] | None, rep: Report, secret_template: dict) -> None:
    f = root / "deploy/docker-compose.yml"
    label = "compose: `docker compose config -q` passes"
    if compose_cmd is None:
        rep.skip(label, skip_reason)
        return
    proc = subprocess.run(compose_cmd + ["-f", str(f), "config", "-q"], capture_output=True, text=True)
    tool = " ".join(Path(compose_cmd[0]).name if i == 0 else a for i, a in enumerate(compose_cmd))
    if proc.returncode != 0:
        rep.result(label, [f"{tool}: {(proc.stderr or proc.stdout).strip()}"])
        return
    if Path(compose_cmd[0]).name == "compose-config":
        rep.result(label, [], "the docker compose plugin is not installed: validated with scripts/compose-config, "
                              "built from compose-go, the loader and validator docker compose is made of")
    else:
        rep.result(label, [], f"with {tool}")
    proc = subprocess.run(compose_cmd + ["-f", str(f), "config", "--format", "json"], capture_output=True, text=True)
    model = json.loads(proc.stdout)
    problems = []
    services = model.get("services") or {}
    if dev is None:
        rep.result("compose: agrees with k8s/overlays/dev", ["overlays/dev did not render"])
        return
    deployments = {o["metadata"]["name"]: o for o in dev if o.get("kind") == "Deployment"}
    statefulsets = {o["metadata"]["name"]: o for o in dev if o.get("kind") == "StatefulSet"}
    for svc in SERVICES:
        s = services.get(svc)
        dep = deployments.get(svc)
        if s is None or dep is None:
            problems.append(f"{svc}: in compose {s is not None}, in overlays/dev {dep is not None}")
            continue
        c = pod_spec(dep)["containers"][0]
        k_env = container_env(dep, c, dev, secret_template)
        c_env = s.get("environment") or {}
        k_names = {k for k in k_env if k.startswith("METASTREAM")}
        c_names = {k for k in c_env if k.startswith("METASTREAM")}
        if k_names != c_names:
            problems.append(f"{svc}: METASTREAM variables differ: only in compose {sorted(c_names - k_names)}, only in k8s {sorted(k_names - c_names)}")
        for var in ("METASTREAM_ENV", "METASTREAM_CONFIG_DIR"):
            if k_env.get(var) != c_env.get(var):
                problems.append(f"{svc}: {var} is {c_env.get(var)!r} in compose, {k_env.get(var)!r} in k8s")
        for var, (how, _) in KNOWN_ENV.items():
            if how == "set" and var not in c_env:
                problems.append(f"{svc}: compose does not set {var}")
        k_ports = sorted(p["containerPort"] for p in c.get("ports") or [])
        c_ports = sorted(int(p["target"]) for p in s.get("ports") or [])
        if k_ports != c_ports:
            problems.append(f"{svc}: container ports {c_ports} in compose, {k_ports} in k8s")
        if s.get("command") != c.get("command"):
            problems.append(f"{svc}: command {s.get('command')} in compose, {c.get('command')} in k8s")
        grace = s.get("stop_grace_period", "10s")
        secs = float(re.sub(r"s$", "", grace)) if re.fullmatch(r"[\d.]+s", grace) else None
        cfg = effective_config(root, {k: v for k, v in c_env.items() if v is not None})
        if secs is None or secs <= cfg["shutdown"]["deadline_ms"] / 1000:
            problems.append(f"{svc}: stop_grace_period {grace} is not above shutdown.deadline_ms")
        if not s.get("read_only"):
            problems.append(f"{svc}: not read_only")
        if "config" not in json.dumps(s.get("volumes")) or not any(v.get("target") == c_env.get("METASTREAM_CONFIG_DIR") for v in s.get("volumes") or []):
            problems.append(f"{svc}: the config directory is not mounted at METASTREAM_CONFIG_DIR")
    for infra in ("kafka", "redis"):
        ss = statefulsets.get(infra)
        if ss is None or infra not in services:
            problems.append(f"{infra}: in compose {infra in services}, in overlays/dev {ss is not None}")
            continue
        k_img = pod_spec(ss)["containers"][0]["image"]
        if services[infra].get("image") != k_img:
            problems.append(f"{infra}: image {services[infra].get('image')} in compose, {k_img} in k8s")
    if "create-topics" not in services:
        problems.append("no create-topics service")
    # Prometheus scrapes /metrics where the services serve it: the admin port when there is one.
    prom = load_yaml(root / "deploy/observability/prometheus/prometheus.yml")
    targets = {t for job in prom.get("scrape_configs") or [] if job.get("job_name") == "metastream"
               for sc in job.get("static_configs") or [] for t in sc.get("targets") or []}
    want = set()
    for svc in SERVICES:
        if svc not in deployments:
            continue
        ports = {p.get("name"): p["containerPort"] for p in pod_spec(deployments[svc])["containers"][0].get("ports") or []}
        want.add(f"{svc}:{ports.get(ADMIN_PORT_NAME, ports.get('http'))}")
        # An admin port is published on the host's loopback only, if at all.
        if ADMIN_PORT_NAME in ports:
            for p in (services.get(svc) or {}).get("ports") or []:
                if int(p["target"]) == ports[ADMIN_PORT_NAME] and p.get("published") and p.get("host_ip") not in ("127.0.0.1", "::1"):
                    problems.append(f"{svc}: the admin port {p['target']} is published on {p.get('host_ip') or 'every interface'}, not 127.0.0.1")
    if targets != want:
        problems.append(f"Prometheus scrapes {sorted(targets)}, the services serve /metrics on {sorted(want)}")
    # The compose edge includes the JSON error pages from where the compose file mounts them.
    m = re.search(r"^\s*include\s+(\S+json-errors\.conf);", (root / "deploy/compose/edge.conf").read_text(), re.M)
    mounts = {v.get("target"): v.get("source") for v in (services.get("edge") or {}).get("volumes") or []}
    if not m:
        problems.append("deploy/compose/edge.conf does not include json-errors.conf")
    elif Path(mounts.get(m.group(1)) or "/nonexistent").resolve() != (root / "deploy/nginx/json-errors.conf").resolve():
        problems.append(f"the edge service does not mount deploy/nginx/json-errors.conf at {m.group(1)} (mounts: {mounts})")
    rep.result("compose: service names, ports, METASTREAM variables and images agree with k8s/overlays/dev", problems,
               f"{len(services)} compose services")


def check_secret_template(root: Path, version: str, rep: Report) -> list[str]:
    import kubernetes_validate

    path = root / "k8s/base/secret.template.yaml"
    problems = []
    doc = load_yaml(path)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except Exception as err:
        problems.append(f"schema: {getattr(err, 'message', err)}")
    for k, v in (doc.get("stringData") or {}).items():
        if not re.search(r"<[^>]+>", str(v)):
            problems.append(f"{k}: not a <placeholder>; the template must hold no secret")
    if doc.get("data"):
        problems.append("has data: (base64 values); use <placeholders> in stringData")
    kust = load_yaml(root / "k8s/base/kustomization.yaml")
    if "secret.template.yaml" in (kust.get("resources") or []):
        problems.append("is listed in k8s/base/kustomization.yaml: it would be applied")
    rep.result("k8s/base/secret.template.yaml: valid, placeholders only, not applied", problems)
    return list((doc.get("stringData") or {}).keys())


# --- main -----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--variants", type=Path, required=True, help="a directory of kustomizations to render, one per variant")
    ap.add_argument("--k8s-version", default="1.31.0")
    ap.add_argument("--compose", default="", help="the compose command, space-separated (e.g. `docker compose`)")
    ap.add_argument("--compose-skip", default="", help="why the compose check is skipped")
    args = ap.parse_args()
    root = args.root.resolve()
    rep = Report()

    check_config_copies(root, rep)
    variants: dict[str, list[dict]] = {}
    for d in sorted(args.variants.iterdir()):
        if not (d / "kustomization.yaml").is_file():
            continue
        name = d.name
        objs, err = render(d)
        if objs is None:
            rep.result(f"{name}: kubectl kustomize renders", [err])
            continue
        rep.result(f"{name}: kubectl kustomize renders", [], f"{len(objs)} objects, in {d / 'rendered.yaml'}")
        variants[name] = objs
    if not variants:
        rep.result("render", ["no variant rendered"])
    secret_template = load_yaml(root / "k8s/base/secret.template.yaml")
    secret_keys = check_secret_template(root, args.k8s_version, rep)
    for name, objs in variants.items():
        print(f"--- {name}")
        check_schemas(name, objs, args.k8s_version, rep)
        check_containers(name, objs, rep)
        check_scaling(name, objs, root, rep, secret_template)
        check_grace(name, objs, root, rep, secret_template)
        check_env(name, objs, root, rep, secret_template, secret_keys)
        check_topics_job(name, objs, root, rep, secret_template)
        check_ingress(name, objs, root, rep)
        check_network(name, objs, root, rep, secret_template)
        check_admin_routes(name, objs, root, rep)
        check_admin_policies(name, objs, rep)
        check_scrape(name, objs, rep)
    print("--- images, Dockerfile, compose")
    check_images(root, variants, rep)
    check_dockerfile(root, rep)
    compose_cmd = args.compose.split() if args.compose else None
    check_compose(root, compose_cmd, args.compose_skip, variants.get("dev"), rep, secret_template)

    line = f"{rep.passed} passed, {rep.failed} failed"
    if rep.skipped:
        line += f", {rep.skipped} skipped"
    print(line)
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
