"""Routing and isolation: the Ingress and the nginx edges, NetworkPolicies, the admin ports, Prometheus scraping.

Part of scripts/k8s_checks.py (see its docstring).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from deploy_checks.common import ADMIN_LISTEN, ADMIN_NAMESPACES, ADMIN_PATHS, ADMIN_PORT_NAME, OPERATOR_LABEL, Report, SAMPLE_PATHS, SERVICES, container_env, effective_config, pod_labels, pod_spec, selector_matches


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
