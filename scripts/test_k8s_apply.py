#!/usr/bin/env python3
"""`kubectl apply` for real (make test-k8s): both overlays, applied server-side to a real API server
with its controllers, on fake nodes.

Run by scripts/test-k8s.sh after scripts/kube.sh started etcd, kube-apiserver,
kube-controller-manager and kube-scheduler. For each overlay (dev, then prod after the dev
namespace is deleted):

  1. `kubectl apply -k ... --server-side` applies every object (admission, defaulting, Pod Security
     `restricted` and the CRDs' schemas all run);
  2. every Deployment and StatefulSet rolls out (`kubectl rollout status`) on the fake nodes
     (scripts/kube_fake_nodes.py), the topic Job completes;
  3. each HorizontalPodAutoscaler resolves its target and holds its minReplicas, each
     PodDisruptionBudget selects its Deployment's pods and allows what it should, each Service
     selects ready pods;
  4. a second apply changes nothing (`kubectl diff` is empty, no generation moves, no conflict);
  5. an apply with another image tag rolls every service Deployment without ever going below
     replicas - maxUnavailable ready pods nor above replicas + maxSurge pods its ReplicaSets ask
     for (what the Deployment controller bounds; the pods follow a moment later);
  6. `kubectl drain` of the busiest node, then of a second one, evicts everything through the
     PodDisruptionBudgets (the second drain must meet a refusal where a budget has more pods on the
     node than it lets go), never leaving a budget's pods more unavailable than it allows, and every
     rollout completes again.

The prod overlay also applies with components/keda (server-side dry run: KEDA's CRDs validate the
ScaledObjects). Ends with "N passed, M failed"; exits non-zero on any failure.
Usage: scripts/test_k8s_apply.py KUBECTL KUBECONFIG CRD_DIR
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kube_fake_nodes import Api, FakeKubelet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "metastream"
NODES = ["metastream-node-1", "metastream-node-2", "metastream-node-3"]
ROLLOUT_TIMEOUT = "180s"
STORAGE_CLASS = "metastream-test-local"
FIELD_MANAGER = "metastream-test"


class Run:
    def __init__(self, kubectl: str, kubeconfig: str):
        self.kubectl = kubectl
        self.api = Api.from_kubeconfig(kubeconfig)
        self.env = dict(os.environ, KUBECONFIG=kubeconfig)
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {name}")
        else:
            self.failed.append(name)
            print(f"  FAIL  {name}" + (f"\n        {detail.strip()[:3000]}" if detail else ""))
        return ok

    def k(self, *args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
        return subprocess.run([self.kubectl, *args], env=self.env, input=stdin, capture_output=True,
                              text=True, timeout=timeout)

    def json(self, *args: str) -> dict:
        result = self.k(*args, "-o", "json")
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return json.loads(result.stdout)


def render(run: Run, target: str) -> list[str]:
    """The objects an overlay renders to, as kind/name."""
    result = run.k("kustomize", target)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {target}: {result.stderr}")
    result = run.k("create", "--dry-run=client", "-o", "name", "-f", "-", stdin=result.stdout)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl create --dry-run=client: {result.stderr}")
    return result.stdout.split()


def wait_for(predicate, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def events(run: Run) -> str:
    """What explains a failure: pods and claims not ready, the warnings, then the latest events."""
    pods = run.k("-n", NAMESPACE, "get", "pods,pvc", "-o", "wide").stdout
    not_ready = [line for line in pods.splitlines()
                 if line.startswith("NAME") or not any(ok in line for ok in (" 1/1 ", "Completed", "Bound"))]
    warnings = run.k("-n", NAMESPACE, "get", "events", "--field-selector=type=Warning",
                     "--sort-by=.lastTimestamp").stdout.splitlines()[-10:]
    latest = run.k("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp").stdout.splitlines()[-15:]
    return "\n".join(not_ready + ["warnings:"] + warnings + ["latest events:"] + latest)


def rollouts(run: Run, label: str) -> None:
    workloads = run.json("-n", NAMESPACE, "get", "deployments,statefulsets")["items"]
    run.check(f"{label}: {len(workloads)} Deployments and StatefulSets exist", len(workloads) >= 4)
    for w in workloads:
        name = f"{w['kind'].lower()}/{w['metadata']['name']}"
        result = run.k("-n", NAMESPACE, "rollout", "status", name, f"--timeout={ROLLOUT_TIMEOUT}")
        run.check(f"{label}: rollout status {name}", result.returncode == 0,
                  result.stderr + result.stdout + "\n" + events(run))


def job_completes(run: Run, label: str) -> None:
    for job in run.json("-n", NAMESPACE, "get", "jobs")["items"]:
        name = job["metadata"]["name"]
        result = run.k("-n", NAMESPACE, "wait", f"job/{name}", "--for=condition=Complete", "--timeout=120s")
        run.check(f"{label}: job/{name} completes", result.returncode == 0, result.stderr + events(run))


def pods_of(run: Run, selector: dict) -> list[dict]:
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    return run.json("-n", NAMESPACE, "get", "pods", "-l", labels)["items"]


def is_ready(pod: dict) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def controllers_did_their_work(run: Run, label: str) -> None:
    deployments = {d["metadata"]["name"]: d for d in run.json("-n", NAMESPACE, "get", "deployments")["items"]}
    hpas = run.json("-n", NAMESPACE, "get", "hpa")["items"]
    for hpa in hpas:
        name = hpa["metadata"]["name"]
        target = hpa["spec"]["scaleTargetRef"]["name"]
        conditions = {c["type"]: c for c in hpa.get("status", {}).get("conditions", [])}

        def resolved():
            h = run.json("-n", NAMESPACE, "get", "hpa", name)
            c = {c["type"]: c for c in h.get("status", {}).get("conditions", [])}
            return c if c.get("AbleToScale", {}).get("status") == "True" else None

        conditions = wait_for(resolved, 60, 2) or conditions
        able = conditions.get("AbleToScale", {})
        run.check(f"{label}: hpa/{name} resolves its target deployment/{target}",
                  able.get("status") == "True" and target in deployments,
                  json.dumps(conditions, indent=1))
        minimum = hpa["spec"].get("minReplicas", 1)

        def scaled():
            d = run.json("-n", NAMESPACE, "get", "deployment", target)
            return d["spec"].get("replicas") == minimum and d["status"].get("readyReplicas") == minimum

        run.check(f"{label}: hpa/{name} holds deployment/{target} at minReplicas {minimum}",
                  wait_for(scaled, 120, 1),
                  f"replicas {run.json('-n', NAMESPACE, 'get', 'deployment', target)['spec'].get('replicas')}")
    # Read again: the HorizontalPodAutoscalers have just set the replicas.
    deployments = {d["metadata"]["name"]: d for d in run.json("-n", NAMESPACE, "get", "deployments")["items"]}
    for pdb in run.json("-n", NAMESPACE, "get", "pdb")["items"]:
        name = pdb["metadata"]["name"]
        selector = pdb["spec"]["selector"]["matchLabels"]
        owners = [d for d in deployments.values()
                  if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())]
        replicas = owners[0]["spec"].get("replicas", 1) if len(owners) == 1 else None
        allowed = replicas if "maxUnavailable" not in pdb["spec"] else min(int(pdb["spec"]["maxUnavailable"]), replicas or 0)

        def settled():
            p = run.json("-n", NAMESPACE, "get", "pdb", name)["status"]
            return p if p.get("expectedPods") == replicas and p.get("disruptionsAllowed") == allowed else None

        status = wait_for(settled, 60, 1) or run.json("-n", NAMESPACE, "get", "pdb", name).get("status", {})
        run.check(f"{label}: pdb/{name} selects the {replicas} pods of one Deployment and allows {allowed} disruption(s)",
                  len(owners) == 1 and status.get("expectedPods") == replicas
                  and status.get("currentHealthy") == replicas and status.get("disruptionsAllowed") == allowed,
                  json.dumps(status))
    for service in run.json("-n", NAMESPACE, "get", "services")["items"]:
        name = service["metadata"]["name"]
        if not service["spec"].get("selector"):
            continue

        def endpoints():
            slices = run.json("-n", NAMESPACE, "get", "endpointslices", "-l", f"kubernetes.io/service-name={name}")
            return [e for s in slices["items"] for e in s.get("endpoints") or []
                    if (e.get("conditions") or {}).get("ready")]

        ready = wait_for(endpoints, 60, 1)
        run.check(f"{label}: service/{name} selects ready pods ({len(ready or [])} endpoints)", bool(ready))


def generations(run: Run) -> dict[str, str]:
    """What a spec change moves: generation where an object has one, else its resourceVersion."""
    kinds = "deployments,statefulsets,services,configmaps,hpa,pdb,networkpolicies,ingresses,serviceaccounts,jobs"
    out = {}
    for item in run.json("-n", NAMESPACE, "get", kinds)["items"]:
        meta = item["metadata"]
        if meta["name"] == "kube-root-ca.crt":
            continue
        out[f"{item['kind']}/{meta['name']}"] = str(meta.get("generation") or meta["resourceVersion"])
    return out


def apply(run: Run, target: str, *extra: str) -> subprocess.CompletedProcess:
    return run.k("apply", "-k", target, "--server-side", f"--field-manager={FIELD_MANAGER}", *extra)


def reapply_is_clean(run: Run, label: str, target: str) -> None:
    diff = run.k("diff", "-k", target, "--server-side", f"--field-manager={FIELD_MANAGER}")
    run.check(f"{label}: kubectl diff after apply is empty", diff.returncode == 0, diff.stdout + diff.stderr)
    before = generations(run)
    result = apply(run, target)
    run.check(f"{label}: second apply succeeds without conflicts", result.returncode == 0, result.stderr)
    time.sleep(2)
    after = generations(run)
    moved = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    run.check(f"{label}: second apply changes nothing ({len(after)} objects)", not moved, json.dumps(moved))


class Watch(threading.Thread):
    """Samples pods and ReplicaSets while something happens, recording every breach of a bound."""

    def __init__(self, api: Api, bounds):
        super().__init__(daemon=True)
        self.api, self.bounds = api, bounds
        self.stop = threading.Event()
        self.breaches: list[str] = []
        self.samples = 0

    def run(self):
        while not self.stop.is_set():
            try:
                code, body = self.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
                if code != 200:
                    raise RuntimeError(f"HTTP {code}")
                code, sets = self.api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets")
                if code != 200:
                    raise RuntimeError(f"replicasets: HTTP {code}")
                self.samples += 1
                self.breaches.extend(self.bounds(body["items"], sets["items"]))
            except Exception as error:  # noqa: BLE001
                self.breaches.append(f"sampling failed: {error}")
            self.stop.wait(0.1)

    def finish(self):
        self.stop.set()
        self.join(timeout=10)


def service_deployments(run: Run) -> list[dict]:
    return [d for d in run.json("-n", NAMESPACE, "get", "deployments")["items"]
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "service"]


def selected(pods: list[dict], selector: dict) -> list[dict]:
    return [p for p in pods if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]


def rolling_update(run: Run, label: str, target: str) -> None:
    deployments = service_deployments(run)
    limits = {}
    for d in deployments:
        rolling = d["spec"]["strategy"].get("rollingUpdate", {})
        limits[d["metadata"]["name"]] = (d["spec"]["selector"]["matchLabels"], d["spec"]["replicas"],
                                         int(rolling.get("maxUnavailable", 0)), int(rolling.get("maxSurge", 0)))

    def bounds(pods, replica_sets):
        out = []
        for name, (selector, replicas, max_unavailable, max_surge) in limits.items():
            mine = selected(pods, selector)
            ready = sum(is_ready(p) for p in mine)
            if ready < replicas - max_unavailable:
                out.append(f"{name}: {ready} ready < {replicas} - maxUnavailable {max_unavailable}")
            # The surge Kubernetes bounds is the pods the ReplicaSets ask for: a ReplicaSet scaled
            # down marks its pod for deletion a moment later, and a sample in between sees one pod
            # too many although no controller asked for it (seen once in `make test`).
            sets = [r for r in selected(replica_sets, selector) if any(o.get("kind") == "Deployment" and o.get("name") == name
                                                                       for o in r["metadata"].get("ownerReferences", []))]
            asked = sum(int(r["spec"].get("replicas", 0)) for r in sets)
            if asked > replicas + max_surge:
                out.append(f"{name}: its ReplicaSets ask for {asked} pods > {replicas} + maxSurge {max_surge}: " + ", ".join(
                    f"{r['metadata']['name']} ({r['spec'].get('replicas')})" for r in sets))
        return out

    with tempfile.TemporaryDirectory(dir=ROOT / "var" / "kube") as scratch:
        relative = os.path.relpath(ROOT / target, scratch)
        Path(scratch, "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {relative}\nimages:\n  - name: metastream\n    newTag: rollout-test\n"
            f"  - name: registry.example.com/metastream\n    newTag: rollout-test\n")
        watch = Watch(run.api, bounds)
        watch.start()
        result = apply(run, scratch)
        run.check(f"{label}: apply with a new image tag succeeds", result.returncode == 0, result.stderr)
        for d in deployments:
            name = d["metadata"]["name"]
            status = run.k("-n", NAMESPACE, "rollout", "status", f"deployment/{name}", f"--timeout={ROLLOUT_TIMEOUT}")
            images = {c["image"] for p in pods_of(run, d["spec"]["selector"]["matchLabels"])
                      if not p["metadata"].get("deletionTimestamp") for c in p["spec"]["containers"]}
            run.check(f"{label}: deployment/{name} rolled to the new tag", status.returncode == 0
                      and all(i.endswith(":rollout-test") for i in images), status.stderr + str(images))
        watch.finish()
        run.check(f"{label}: the rolling update kept every Deployment within maxUnavailable/maxSurge "
                  f"({watch.samples} samples)", watch.samples > 0 and not watch.breaches,
                  "\n".join(sorted(set(watch.breaches))[:20]))


def drain(run: Run, label: str) -> None:
    """Drains the busiest node, then, with it still cordoned, the busiest of the others: by then a
    Deployment has two pods on that node, and its budget (maxUnavailable 1) must refuse the second
    eviction until the first pod's replacement is ready elsewhere."""
    budgets = []
    for pdb in run.json("-n", NAMESPACE, "get", "pdb")["items"]:
        expected = pdb["status"]["expectedPods"]
        unavailable = int(pdb["spec"].get("maxUnavailable", 0)) if "maxUnavailable" in pdb["spec"] \
            else expected - int(pdb["spec"]["minAvailable"])
        budgets.append((pdb["metadata"]["name"], pdb["spec"]["selector"]["matchLabels"], expected, unavailable))

    def bounds(pods, _replica_sets):
        out = []
        for name, selector, expected, unavailable in budgets:
            ready = sum(is_ready(p) for p in selected(pods, selector))
            if ready < expected - unavailable:
                out.append(f"pdb/{name}: {ready} ready < {expected} - {unavailable}")
        return out

    drained = []
    for _ in range(2):
        pods = [p for p in run.json("-n", NAMESPACE, "get", "pods")["items"]
                if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"]
        counts = {n: sum(1 for p in pods if p["spec"].get("nodeName") == n) for n in NODES if n not in drained}
        node = max(counts, key=counts.get)
        # A budget must refuse an eviction when more of its pods are on the node than it lets go.
        must_refuse = [name for name, selector, _, unavailable in budgets
                       if sum(1 for p in selected(pods, selector) if p["spec"].get("nodeName") == node) > unavailable]
        watch = Watch(run.api, bounds)
        watch.start()
        result = run.k("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=180s", timeout=240)
        watch.finish()
        drained.append(node)
        refused = result.stderr.count("would violate the pod's disruption budget")
        run.check(f"{label}: kubectl drain {node} ({counts[node]} pods) completes through the PDBs "
                  f"({refused} evictions refused by a budget, then retried)",
                  result.returncode == 0 and (refused > 0 or not must_refuse),
                  f"budgets that had to refuse: {must_refuse}\n" + result.stderr[-2000:])
        left = [p["metadata"]["name"] for p in run.json("-n", NAMESPACE, "get", "pods")["items"]
                if p["spec"].get("nodeName") == node and not p["metadata"].get("deletionTimestamp")
                and p["status"].get("phase") not in ("Succeeded", "Failed")]
        run.check(f"{label}: no running pod left on {node}", not left, str(left))
        run.check(f"{label}: draining {node} never took a budget's pods below what it allows "
                  f"({watch.samples} samples)", watch.samples > 0 and not watch.breaches,
                  "\n".join(sorted(set(watch.breaches))[:20]))
        rollouts(run, f"{label} after draining {node}")
    for node in drained:
        run.k("uncordon", node)


def config_change(run: Run, label: str, target: str) -> None:
    """A release that changes the configuration: every ConfigMap name (content hash) moves, so the
    Deployments roll and the topic Job's pod template changes. A Job's template is immutable: the
    apply works only once the TTL controller has removed the finished Job, after which the apply
    creates it again and the topics are checked with the new configuration."""
    job = run.json("-n", NAMESPACE, "get", "jobs")["items"][0]
    name, ttl = job["metadata"]["name"], job["spec"].get("ttlSecondsAfterFinished")
    gone = wait_for(lambda: run.k("-n", NAMESPACE, "get", "job", name).returncode != 0, (ttl or 0) + 60, 2)
    run.check(f"{label}: the finished job/{name} is removed by its ttlSecondsAfterFinished ({ttl}s)", bool(gone))
    with tempfile.TemporaryDirectory(dir=ROOT / "var" / "kube") as scratch:
        relative = os.path.relpath(ROOT / target, scratch)
        Path(scratch, "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {relative}\nconfigMapGenerator:\n  - name: metastream-env\n    behavior: merge\n"
            "    literals:\n      - METASTREAM__TELEMETRY__LOG_LEVEL=debug\n")
        result = apply(run, scratch)
        run.check(f"{label}: apply with a configuration change succeeds", result.returncode == 0, result.stderr)
    rollouts(run, f"{label} after the configuration change")
    job_completes(run, f"{label} after the configuration change")


def delete_namespace(run: Run, label: str) -> None:
    result = run.k("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=180s", timeout=240)
    run.check(f"{label}: namespace {NAMESPACE} deleted (pods, PVCs and all)", result.returncode == 0, result.stderr)


def volumes(run: Run) -> None:
    """Static PersistentVolumes for the dev StatefulSets' claims, in a default StorageClass.

    The class binds on first consumer, as the default class of kind, k3s and the cloud CSI drivers
    does: the scheduler picks a volume while it places the pod. With immediate binding the pod is
    first unschedulable ("unbound immediate PersistentVolumeClaims") and waits for the scheduler to
    requeue it after the claim binds; on a slow machine that wait outlasted a rollout (CI, stop 35).
    """
    storage_class = f"""---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: {STORAGE_CLASS}
  annotations: {{storageclass.kubernetes.io/is-default-class: "true"}}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
"""
    manifest = storage_class + "".join(f"""---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: metastream-test-pv-{i}
spec:
  storageClassName: {STORAGE_CLASS}
  capacity: {{storage: 4Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  hostPath: {{path: /nonexistent/metastream-test-pv-{i}}}
""" for i in range(4))
    result = run.k("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=manifest)
    run.check("cluster: a default StorageClass (bound on first consumer) and 4 PersistentVolumes", result.returncode == 0, result.stderr)


def crds(run: Run, crd_dir: str) -> None:
    files = sorted(Path(crd_dir).glob("*.yaml"))
    for f in files:
        result = run.k("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", str(f))
        run.check(f"cluster: CRD {f.name} applies", result.returncode == 0, result.stderr)
    result = run.k("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    run.check(f"cluster: {len(files)} CRDs established", result.returncode == 0, result.stderr)


def overlay(run: Run, name: str) -> None:
    target = f"k8s/overlays/{name}"
    label = name
    print(f"{label}: kubectl apply -k {target} --server-side")
    rendered = render(run, target)
    result = apply(run, target)
    run.check(f"{label}: apply -k {target} --server-side applies all {len(rendered)} objects",
              result.returncode == 0 and result.stdout.count("serverside-applied") == len(rendered),
              result.stderr + result.stdout)
    if result.returncode != 0:
        return
    if name == "prod":
        # As docs/src/deploy.md says: the Secret the pods need, created in the overlay's namespace.
        # Throwaway values; the pods wait (CreateContainerConfigError) until it exists.
        pending = wait_for(lambda: [p for p in run.json("-n", NAMESPACE, "get", "pods")["items"]
                                    if "CreateContainerConfigError" in json.dumps(p.get("status", {}))], 60, 1)
        run.check(f"{label}: without metastream-secrets the pods wait (CreateContainerConfigError)", bool(pending))
        secret = run.k("-n", NAMESPACE, "create", "secret", "generic", "metastream-secrets",
                       "--from-literal=METASTREAM__AUTH__TOKENS=throwaway-test-token",
                       "--from-literal=METASTREAM__REDIS__URL=rediss://:throwaway@redis.example.internal:6380")
        run.check(f"{label}: create secret metastream-secrets", secret.returncode == 0, secret.stderr)
    rollouts(run, label)
    job_completes(run, label)
    controllers_did_their_work(run, label)
    reapply_is_clean(run, label, target)
    rolling_update(run, label, target)
    drain(run, label)
    if name == "dev":
        config_change(run, label, target)


def keda_variant(run: Run) -> None:
    with tempfile.TemporaryDirectory(dir=ROOT / "var" / "kube") as scratch:
        relative = os.path.relpath(ROOT / "k8s/overlays/prod", scratch)
        components = os.path.relpath(ROOT / "k8s/components/keda", scratch)
        Path(scratch, "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {relative}\ncomponents:\n  - {components}\n")
        result = apply(run, scratch, "--dry-run=server")
        scaled = result.stdout.count("scaledobject")
        run.check(f"prod+keda: apply --server-side --dry-run=server validates {scaled} ScaledObjects against KEDA's CRD",
                  result.returncode == 0 and scaled >= 2, result.stderr + result.stdout)


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    kubectl, kubeconfig, crd_dir = sys.argv[1:]
    run = Run(kubectl, kubeconfig)
    kubelet = FakeKubelet(run.api, NODES)
    kubelet.start()
    started = time.monotonic()
    try:
        ready = wait_for(lambda: all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
            and not n["spec"].get("taints")
            for n in run.json("get", "nodes")["items"]), 60, 1)
        run.check(f"cluster: {len(NODES)} fake nodes Ready and untainted", bool(ready),
                  run.k("get", "nodes", "-o", "wide").stdout)
        crds(run, crd_dir)
        volumes(run)
        overlay(run, "dev")
        delete_namespace(run, "dev")
        overlay(run, "prod")
        keda_variant(run)
    except Exception as error:  # noqa: BLE001 - reported as a failure, never swallowed
        run.check("the test ran to its end", False, f"{type(error).__name__}: {error}")
    finally:
        kubelet.shutdown()
    run.check("the fake kubelet met no API error", not kubelet.errors, "\n".join(kubelet.errors[:10]))
    print(f"{run.passed} passed, {len(run.failed)} failed ({time.monotonic() - started:.0f}s)")
    for name in run.failed:
        print(f"  failed: {name}")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
