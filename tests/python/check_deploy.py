"""Renders and checks the deployment files that cannot run here (no Docker,
no Kubernetes): the Helm chart, the compose file and its load balancer.
Prints what the Rust side checks further (server/tests/deploy.rs) as JSON:
the configuration texts the files hand to bulkhead, and every environment
variable name they set for it.

usage: check_deploy.py DEPLOY_DIR

The chart's templates use plain substitution of .Values, .Release and
.Chart fields only; anything else fails here, so this rendering is what
`helm template` gives.
"""
import json
import os
import re
import sys
import tomllib

import yaml

deploy = sys.argv[1]
problems = []
TEMPLATE = re.compile(r"\{\{\s*\.(Values|Release|Chart)\.([A-Za-z0-9_.]+)\s*\}\}")


def lookup(scope, dotted, where):
    cur = scope
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            problems.append(f"{where}: no value {dotted}")
            return ""
        cur = cur[part]
    return str(cur)


def render(text, ctx, where):
    out = TEMPLATE.sub(lambda m: lookup(ctx[m.group(1)], m.group(2), where), text)
    if "{{" in out:
        problems.append(f"{where}: unsupported template syntax: {out[out.index('{{'):][:60]!r}")
    return out


# --- Helm chart
chart_dir = os.path.join(deploy, "helm", "bulkhead")
with open(os.path.join(chart_dir, "Chart.yaml")) as f:
    chart = yaml.safe_load(f)
with open(os.path.join(chart_dir, "values.yaml")) as f:
    values = yaml.safe_load(f)
ctx = {
    "Values": values,
    "Release": {"Name": "bh"},
    "Chart": {"Name": chart["name"], "AppVersion": chart["appVersion"]},
}
docs = []
templates = os.path.join(chart_dir, "templates")
for name in sorted(os.listdir(templates)):
    with open(os.path.join(templates, name)) as f:
        rendered = render(f.read(), ctx, name)
    docs.extend(d for d in yaml.safe_load_all(rendered) if d)
kinds = sorted(d["kind"] for d in docs)
if kinds != ["ConfigMap", "Service", "Service", "StatefulSet"]:
    problems.append(f"chart renders {kinds}")
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
sts = by_kind["StatefulSet"][0]
if sts["spec"]["replicas"] != values["replicas"]:
    problems.append("replicas not from values")
pod = sts["spec"]["template"]
if sts["spec"]["selector"]["matchLabels"] != {
    k: v for k, v in pod["metadata"]["labels"].items()
}:
    problems.append("the StatefulSet's selector does not match its pods")
container = pod["spec"]["containers"][0]
ports = {p["name"]: p["containerPort"] for p in container["ports"]}
chart_config = by_kind["ConfigMap"][0]["data"]["bulkhead.toml"]
listen = tomllib.loads(chart_config)["listen"]
for name, key in [("otlp-grpc", "grpc"), ("otlp-http", "http"), ("api", "api"),
                  ("flight", "flight"), ("metrics", "metrics")]:
    if ports.get(name) != int(listen[key].rsplit(":", 1)[1]):
        problems.append(f"container port {name} is not listen.{key}")
for probe, path in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]:
    get = container[probe]["httpGet"]
    if get["path"] != path or get["port"] != "metrics":
        problems.append(f"{probe} is not {path} on the metrics port")
mounts = {m["mountPath"] for m in container["volumeMounts"]}
for needed in ["/etc/bulkhead/bulkhead.toml", "/etc/bulkhead/policies", "/var/lib/bulkhead"]:
    if needed not in mounts:
        problems.append(f"nothing mounted at {needed}")
volumes = {v["name"] for v in pod["spec"]["volumes"]}
volumes |= {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
for m in container["volumeMounts"]:
    if m["name"] not in volumes:
        problems.append(f"mount {m['name']} has no volume")
for svc in by_kind["Service"]:
    for p in svc["spec"]["ports"]:
        if p["targetPort"] not in ports:
            problems.append(f"service {svc['metadata']['name']} targets unknown port {p['targetPort']}")
    if svc["spec"]["selector"] != pod["metadata"]["labels"]:
        problems.append(f"service {svc['metadata']['name']} selects no pod")
client_ports = {p["name"] for p in by_kind["Service"][0]["spec"]["ports"]}
if "metrics" in client_ports:
    problems.append("self-metrics exposed on the client-facing service")
env_names = [e["name"] for e in container["env"]]

# --- compose
compose_dir = os.path.join(deploy, "compose")
with open(os.path.join(compose_dir, "compose.yaml")) as f:
    compose = yaml.safe_load(f)
services = compose["services"]
nodes = [n for n in services if n.startswith("node-")]
if len(nodes) < 2:
    problems.append(f"compose has {len(nodes)} nodes")
for n in nodes:
    svc = services[n]
    if "./bulkhead.toml:/etc/bulkhead/bulkhead.toml:ro" not in svc["volumes"]:
        problems.append(f"{n} does not run bulkhead.toml")
    if svc["environment"]["BULKHEAD_NODE_NAME"] != n:
        problems.append(f"{n} is not named {n}")
    env_names.extend(svc["environment"])
names = [services[n]["environment"]["BULKHEAD_NODE_NAME"] for n in nodes]
if len(set(names)) != len(names):
    problems.append("two nodes share a name")
with open(os.path.join(compose_dir, "bulkhead.toml")) as f:
    compose_config = f.read()
node_listen = tomllib.loads(compose_config)["listen"]
with open(os.path.join(compose_dir, "nginx.conf")) as f:
    nginx = f.read()
for key in ["grpc", "http", "api"]:
    port = node_listen[key].rsplit(":", 1)[1]
    for n in nodes:
        if f"server {n}:{port}" not in nginx:
            problems.append(f"the load balancer does not send {key} to {n}:{port}")
    if f'"{port}:{port}"' not in json.dumps(services["lb"]["ports"]):
        problems.append(f"port {port} not published by the load balancer")
if "grpc_pass" not in nginx:
    problems.append("the load balancer does not speak gRPC to the nodes")

print(json.dumps({
    "problems": problems,
    "configs": {"chart": chart_config, "compose": compose_config},
    "env": sorted(set(env_names)),
}))
