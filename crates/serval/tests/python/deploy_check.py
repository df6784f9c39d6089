"""Checks deploy/k8s offline (driven by tests/it/deploy.rs): every file validates strictly
against Kubernetes 1.30's schemas (kubernetes-validate, installed in the test venv), and the
invariants that matter hold against the real binary and server:

  deploy_check.py K8S_DIR SERVE_HELP_FILE STORE_HELP_FILE METRICS_FILE

SERVE_HELP_FILE / STORE_HELP_FILE: `serval serve --help` / `serval store --help`; METRICS_FILE: a
running server's /metrics. Prints one line per check group; exits non-zero on the first failure.
"""

import os
import re
import subprocess
import sys

import yaml

k8s, serve_help, store_help, metrics = sys.argv[1:5]
serve_help = open(serve_help).read()
store_help = open(store_help).read()
metrics = open(metrics).read()
# Kinds whose schema Kubernetes itself does not define (kustomize's file, the operator's CRD).
NOT_CORE = {"Kustomization", "ServiceMonitor"}

files = sorted(f for f in os.listdir(k8s) if f.endswith((".yaml", ".yml")))
assert files, "no manifests"
validator = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
objects = {}
for name in files:
    docs = [d for d in yaml.safe_load_all(open(os.path.join(k8s, name))) if d is not None]
    assert docs, f"{name}: empty"
    for doc in docs:
        assert "apiVersion" in doc and "kind" in doc, f"{name}: an object without apiVersion/kind"
        objects.setdefault(doc["kind"], []).append((name, doc))
    run = subprocess.run(
        [validator, "-k", "1.30.0", "--strict", "--quiet", os.path.join(k8s, name)],
        capture_output=True,
        text=True,
    )
    out = (run.stdout + run.stderr).strip()
    assert run.returncode == 0, f"{name} does not validate:\n{out}"
    for line in out.splitlines():
        assert line.startswith("WARN") and any(f"kind {k} " in line for k in NOT_CORE), (
            f"{name}: {line}"
        )
print(f"validated {len(files)} files against Kubernetes 1.30 (strict)")


def one(kind):
    found = objects.get(kind, [])
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0][1]


deployment = one("Deployment")
pod = deployment["spec"]["template"]["spec"]
pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
[container] = pod["containers"]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
args = container["args"]
assert args[0] == "serve", args


def flag(name):
    assert name in args, f"the Deployment does not pass {name}"
    return args[args.index(name) + 1]


# Every flag the pod passes exists in this binary's `serve --help`.
for arg in args:
    if arg.startswith("--"):
        assert re.search(rf"(^|\s){re.escape(arg)}[\s=,]", serve_help), f"serve has no flag {arg}"
for option, port in [("--port", "http"), ("--grpc-port", "grpc"), ("--metrics-port", "metrics")]:
    assert int(flag(option)) == ports[port], f"{option} {flag(option)} is not the {port} port {ports[port]}"
print(f"serve flags exist and match the container ports {ports}")


def probe_port(port):
    return ports[port] if isinstance(port, str) else port


ready, live, startup = (container[p] for p in ("readinessProbe", "livenessProbe", "startupProbe"))
assert ready["httpGet"]["path"] == "/health/ready" and probe_port(ready["httpGet"]["port"]) == ports["http"]
assert live["httpGet"]["path"] == "/health/live" and probe_port(live["httpGet"]["port"]) == ports["http"]
assert probe_port(startup["grpc"]["port"]) == ports["grpc"], "the gRPC health service is on the gRPC port"
print("probes: /health/ready and /health/live on the HTTP port, grpc.health.v1 on the gRPC port")

# The grace period covers the preStop pause, the drain delay and the shutdown timeout.
config = {}
for source in container.get("envFrom", []):
    if "configMapRef" in source:
        name = source["configMapRef"]["name"]
        maps = [d for _, d in objects.get("ConfigMap", []) if d["metadata"]["name"] == name]
        assert maps, f"no ConfigMap {name}"
        config.update(maps[0]["data"])
pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
drain = float(config.get("SERVAL_DRAIN_DELAY", 1))
shutdown = float(config.get("SERVAL_SHUTDOWN_TIMEOUT", 30))
grace = pod["terminationGracePeriodSeconds"]
assert grace >= pre_stop + drain + shutdown, f"grace {grace} < {pre_stop} + {drain} + {shutdown}"
print(f"terminationGracePeriodSeconds {grace} >= preStop {pre_stop} + drain {drain} + shutdown {shutdown}")

# Non-root, read-only root, every writable path an emptyDir, the home among them.
security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
assert security.get("runAsNonRoot") is True and security.get("readOnlyRootFilesystem") is True
empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
assert all(name in empty for name in mounts.values()), mounts
assert flag("--home") in mounts, "the home (cache) is a mounted emptyDir"
assert "requests" in container["resources"] and "limits" in container["resources"]
print("non-root, read-only root filesystem, home and /tmp on emptyDirs, resources set")

service = one("Service")
assert service["spec"]["selector"].items() <= pod_labels.items()
for port in service["spec"]["ports"]:
    assert port["targetPort"] in ports or port["targetPort"] in ports.values(), port
assert {p["name"] for p in service["spec"]["ports"]} == set(ports), "HTTP, gRPC and metrics"
print("the Service selects the pods and exposes", sorted(ports))

hpa = one("HorizontalPodAutoscaler")
target = hpa["spec"]["scaleTargetRef"]
assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
assert hpa["apiVersion"] == "autoscaling/v2"
pod_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
assert pod_metrics, "a per-pod custom metric"
assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])
adapter = [d for _, d in objects["ConfigMap"] if "config.yaml" in d.get("data", {})]
assert adapter, "the Prometheus adapter rule ships as a ConfigMap"
rules = yaml.safe_load(adapter[0]["data"]["config.yaml"])["rules"]
published = {r["name"]["as"] for r in rules}
for name in pod_metrics:
    assert name in published, f"no adapter rule publishes {name}"
    assert re.search(rf"^{name}[ {{]", metrics, re.M), f"the server exposes no {name}"
print("the HPA scales the Deployment on CPU and", pod_metrics, "(adapter rule shipped, metric exposed)")

pdb = one("PodDisruptionBudget")
assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
job = one("Job")
[migrate] = job["spec"]["template"]["spec"]["containers"]
assert migrate["args"][:2] == ["store", "migrate"], migrate["args"]
assert re.search(r"^\s+migrate\s", store_help, re.M), "serval store has no migrate"
one("Ingress")
monitors = objects.get("ServiceMonitor", [])
assert monitors and monitors[0][1]["spec"]["endpoints"][0]["port"] in ports
kustomization = one("Kustomization")
listed = set(kustomization["resources"])
for name in files:
    if name not in ("kustomization.yaml", "servicemonitor.yaml"):
        assert name in listed, f"{name} is not in kustomization.yaml"
for name in listed:
    assert name in files, f"kustomization.yaml lists a missing {name}"
print("PDB, migration Job (serval store migrate), Ingress, ServiceMonitor, kustomization: consistent")

# The Dockerfile: its serve command's flags exist, it stops with SIGTERM, checks its health, runs as
# the user the manifests expect, and puts the binary where they call it.
import json

dockerfile = open(os.path.join(k8s, "..", "..", "Dockerfile")).read()
lines = dockerfile.splitlines()
cmd = [json.loads(l[len("CMD "):]) for l in lines if l.startswith("CMD ")]
assert cmd and cmd[0][0] == "serve", cmd
for arg in cmd[0]:
    if arg.startswith("--"):
        assert re.search(rf"(^|\s){re.escape(arg)}[\s=,]", serve_help), f"Dockerfile CMD: serve has no {arg}"
assert "STOPSIGNAL SIGTERM" in lines
assert any(l.startswith("HEALTHCHECK") for l in lines) and "/health/live" in dockerfile
users = [l.split()[1] for l in lines if l.startswith("USER ")]
assert users and users[-1].split(":")[0] not in ("root", "0"), users
uid = int(users[0].split(":")[0])
assert pod["securityContext"]["runAsUser"] == uid, "the manifests run as the image's user"
entry = [json.loads(l[len("ENTRYPOINT "):]) for l in lines if l.startswith("ENTRYPOINT ")]
assert entry and entry[0] == container["command"], (entry, container["command"])
assert "SERVAL_HOME=" + flag("--home") in dockerfile, "the image's home is the pod's --home"
print("Dockerfile: CMD flags exist, STOPSIGNAL SIGTERM, HEALTHCHECK, user", uid, "as in the manifests")
print("all deploy checks passed")
