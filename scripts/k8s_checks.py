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
The checks live in scripts/deploy_checks/, one module per target: workloads, network, image,
compose (and common, what they share). Only Python's standard library plus PyYAML and
kubernetes-validate (installed by the shell script).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy_checks.common import Report, load_yaml, render
from deploy_checks.workloads import check_config_copies, check_containers, check_env, check_grace, check_scaling, check_schemas, check_secret_template, check_topics_job
from deploy_checks.network import check_admin_policies, check_admin_routes, check_ingress, check_network, check_scrape
from deploy_checks.image import check_dockerfile, check_images
from deploy_checks.compose import check_compose


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
