"""The workloads: schemas, containers, autoscaling, shutdown grace, environment, the topic Job, the Secret template.

Part of scripts/k8s_checks.py (see its docstring).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path

from deploy_checks.common import ADMIN_LISTEN, ADMIN_PORT_NAME, CRD_KINDS, HARDENING_EXCEPTIONS, KNOWN_ENV, LONG_RUNNING, PARTITION_BOUND, Report, SERVICES, TOOLS, TRANSFORMERS, config_key_of_env, container_env, effective_config, get_path, load_yaml, pod_spec, port_of


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
