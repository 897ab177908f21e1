"""deploy/docker-compose.yml: `docker compose config` and its agreement with the manifests.

Part of scripts/k8s_checks.py (see its docstring).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from deploy_checks.common import ADMIN_PORT_NAME, KNOWN_ENV, Report, SERVICES, container_env, effective_config, load_yaml, pod_spec


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
