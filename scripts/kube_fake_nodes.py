"""Fake nodes for a real control plane: the kubelet's side of the API, without containers.

`make test-k8s` runs the real kube-apiserver, kube-controller-manager and kube-scheduler
(scripts/kube.sh) but no kubelet. This module plays the kubelet of a few Node objects, through the
same API calls a kubelet makes, so that the controllers do their whole job (ReplicaSets, rollouts,
HorizontalPodAutoscalers, PodDisruptionBudgets, drains, namespace deletion):

- registers each node (labels for hostname and zone, capacity, Ready) and renews its Lease in
  kube-node-lease, so the node lifecycle controller keeps it Ready and untainted;
- a pod bound to one of its nodes starts once every ConfigMap and Secret it needs exists (else it
  stays Pending with CreateContainerConfigError, as a kubelet leaves it), then becomes Running and,
  READY_AFTER_S later, Ready; a Job's pod then succeeds;
- a pod being deleted terminates after at most TERMINATE_AFTER_S and is removed (grace period 0),
  as a kubelet confirms a termination.

Pod IPs are invented (10.244.<node>.<n>) and nothing is ever sent to them: they only let the
EndpointSlice controller publish endpoints. Standard library only: the API is plain JSON over HTTPS.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

READY_AFTER_S = 1.0
TERMINATE_AFTER_S = 1.0
LEASE_DURATION_S = 40
RENEW_EVERY_S = 10


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Api:
    """The few REST calls a kubelet needs, authenticated by the kubeconfig's bearer token."""

    def __init__(self, server: str, token: str, ca_file: str):
        self.server = server.rstrip("/")
        self.token = token
        self.context = ssl.create_default_context(cafile=ca_file)

    @classmethod
    def from_kubeconfig(cls, path: str) -> "Api":
        # The kubeconfig scripts/kube.sh writes: one cluster, one token user (YAML, flat keys).
        server = token = ca = None
        for line in open(path, encoding="utf-8"):
            key, _, value = line.strip().partition(": ")
            if key == "server":
                server = value
            elif key == "token":
                token = value
            elif key == "certificate-authority":
                ca = value
        if not (server and token and ca):
            raise SystemExit(f"{path}: no server, token or certificate-authority")
        return cls(server, token, ca)

    def call(self, method: str, path: str, body=None, content_type="application/json", query=None):
        url = self.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=15) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            try:
                detail = json.loads(error.read() or b"null")
            except ValueError:
                detail = None
            return error.code, detail

    def get(self, path, **query):
        return self.call("GET", path, query=query or None)

    def patch_status(self, path, body):
        return self.call("PATCH", path + "/status", body, "application/merge-patch+json")


class FakeKubelet:
    def __init__(self, api: Api, nodes: list[str]):
        self.api = api
        self.nodes = nodes
        self.stop = threading.Event()
        self.seen: dict[str, float] = {}  # pod uid -> when it started running
        self.next_ip: dict[str, int] = {n: 2 for n in nodes}
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, name="fake-kubelet", daemon=True)

    # --- nodes ---------------------------------------------------------------------------------

    def node_status(self, index: int) -> dict:
        stamp = now()
        return {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "conditions": [
                {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m,
                 "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
                for t, r, m in (("MemoryPressure", "SufficientMemory", "fake node"),
                                ("DiskPressure", "NoDiskPressure", "fake node"),
                                ("PIDPressure", "SufficientPID", "fake node"))
            ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                  "message": "fake kubelet (scripts/kube_fake_nodes.py)",
                  "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}],
            "addresses": [{"type": "Hostname", "address": self.nodes[index]}],
            "nodeInfo": {"kubeletVersion": "v1.34.3-fake", "kubeProxyVersion": "", "machineID": "",
                         "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "fake",
                         "containerRuntimeVersion": "fake://0", "operatingSystem": "linux",
                         "architecture": "amd64"},
        }

    def register(self) -> None:
        zones = ["zone-a", "zone-b", "zone-c"]
        for i, name in enumerate(self.nodes):
            node = {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": zones[i % 3],
                    "metastream.dev/fake-node": "true"}},
            }
            code, body = self.api.call("POST", "/api/v1/nodes", node)
            if code not in (201, 409):
                raise RuntimeError(f"registering node {name}: HTTP {code} {body}")
            self.heartbeat(i)

    def heartbeat(self, index: int) -> None:
        name = self.nodes[index]
        self.api.patch_status(f"/api/v1/nodes/{name}", {"status": self.node_status(index)})
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_S, "renewTime": now_micro()}
        code, _ = self.api.call("PATCH", lease_path, {"spec": spec}, "application/merge-patch+json")
        if code == 404:
            self.api.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                          {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                           "metadata": {"name": name}, "spec": spec})

    # --- pods ----------------------------------------------------------------------------------

    def missing_references(self, pod: dict) -> list[str]:
        """ConfigMaps and Secrets the pod needs (not optional) that do not exist."""
        namespace = pod["metadata"]["namespace"]
        spec = pod["spec"]
        wanted = set()
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            for source in container.get("envFrom", []):
                for kind in ("configMapRef", "secretRef"):
                    ref = source.get(kind)
                    if ref and not ref.get("optional"):
                        wanted.add((kind, ref["name"]))
            for env in container.get("env", []):
                value_from = env.get("valueFrom", {})
                for kind, ref_key in (("configMapRef", "configMapKeyRef"), ("secretRef", "secretKeyRef")):
                    ref = value_from.get(ref_key)
                    if ref and not ref.get("optional"):
                        wanted.add((kind, ref["name"]))
        for volume in spec.get("volumes", []):
            if "configMap" in volume and not volume["configMap"].get("optional"):
                wanted.add(("configMapRef", volume["configMap"]["name"]))
            if "secret" in volume and not volume["secret"].get("optional"):
                wanted.add(("secretRef", volume["secret"]["secretName"]))
        missing = []
        for kind, name in sorted(wanted):
            plural = "configmaps" if kind == "configMapRef" else "secrets"
            code, _ = self.api.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
            if code == 404:
                missing.append(f"{plural[:-1]} {name}")
        return missing

    def container_statuses(self, pod: dict, ready: bool, terminated: bool) -> list[dict]:
        statuses = []
        for container in pod["spec"]["containers"]:
            if terminated:
                state = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now(), "finishedAt": now()}}
            else:
                state = {"running": {"startedAt": now()}}
            statuses.append({"name": container["name"], "image": container["image"],
                             "imageID": "fake://" + container["image"], "ready": ready and not terminated,
                             "started": not terminated, "restartCount": 0, "state": state})
        return statuses

    def sync_pod(self, pod: dict, node_index: int) -> None:
        meta, status = pod["metadata"], pod.get("status", {})
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        uid = meta["uid"]
        if meta.get("deletionTimestamp"):
            started = self.seen.setdefault("deleting:" + uid, time.monotonic())
            if time.monotonic() - started >= min(TERMINATE_AFTER_S, pod["spec"].get("terminationGracePeriodSeconds", 30)):
                self.api.call("DELETE", path, {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
            return
        phase = status.get("phase", "Pending")
        if phase in ("Succeeded", "Failed"):
            return
        is_job = any(o.get("kind") == "Job" for o in meta.get("ownerReferences", []))
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
        if uid not in self.seen:
            missing = self.missing_references(pod)
            if missing:
                waiting = {"waiting": {"reason": "CreateContainerConfigError",
                                       "message": "missing " + ", ".join(missing)}}
                self.api.patch_status(path, {"status": {
                    "phase": "Pending", "hostIP": self.host_ip(node_index),
                    "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "",
                                           "ready": False, "restartCount": 0, "state": waiting}
                                          for c in pod["spec"]["containers"]]}})
                return
            self.seen[uid] = time.monotonic()
            ip = f"10.244.{node_index + 1}.{self.next_ip[self.nodes[node_index]]}"
            self.next_ip[self.nodes[node_index]] += 1
            self.api.patch_status(path, {"status": {
                "phase": "Running", "hostIP": self.host_ip(node_index), "hostIPs": [{"ip": self.host_ip(node_index)}],
                "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now(),
                "conditions": self.conditions(ready=False),
                "containerStatuses": self.container_statuses(pod, ready=False, terminated=False)}})
            return
        if time.monotonic() - self.seen[uid] < READY_AFTER_S:
            return
        if is_job:
            self.api.patch_status(path, {"status": {
                "phase": "Succeeded", "conditions": self.conditions(ready=False),
                "containerStatuses": self.container_statuses(pod, ready=False, terminated=True)}})
        elif not ready:
            self.api.patch_status(path, {"status": {
                "conditions": self.conditions(ready=True),
                "containerStatuses": self.container_statuses(pod, ready=True, terminated=False)}})

    @staticmethod
    def host_ip(node_index: int) -> str:
        return f"10.240.0.{node_index + 1}"

    @staticmethod
    def conditions(ready: bool) -> list[dict]:
        value = "True" if ready else "False"
        return [{"type": t, "status": s, "lastTransitionTime": now()} for t, s in (
            ("PodReadyToStartContainers", "True"), ("Initialized", "True"), ("PodScheduled", "True"),
            ("ContainersReady", value), ("Ready", value))]

    # --- loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        last_heartbeat = 0.0
        while not self.stop.is_set():
            try:
                if time.monotonic() - last_heartbeat >= RENEW_EVERY_S:
                    for i in range(len(self.nodes)):
                        self.heartbeat(i)
                    last_heartbeat = time.monotonic()
                code, pods = self.api.get("/api/v1/pods")
                if code == 200:
                    for pod in pods["items"]:
                        node = pod["spec"].get("nodeName")
                        if node in self.nodes:
                            self.sync_pod(pod, self.nodes.index(node))
            except Exception as error:  # noqa: BLE001 - a kubelet keeps going; the test reports it
                self.errors.append(f"{type(error).__name__}: {error}")
            self.stop.wait(0.2)

    def start(self) -> None:
        self.register()
        self.thread.start()

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
