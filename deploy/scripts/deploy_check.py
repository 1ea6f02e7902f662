#!/usr/bin/env python3
"""Checks of the deployment files that no schema expresses, run by deploy/scripts/validate.sh.

    deploy_check.py manifests RENDERED.yaml     node identity, seeds, hardening, probes of rendered k8s
    deploy_check.py servicemonitor RENDERED.yaml   the ServiceMonitor's shape (no CRD schema offline)
    deploy_check.py dashboard-rules OUT.yml DASHBOARD.json...   every panel query as a recording rule,
                                                 for `promtool check rules` to parse the PromQL
    deploy_check.py grafana                      provisioning files agree with the dashboards
    deploy_check.py strip-k8s-sd IN.yml OUT.yml  kubernetes_sd_configs -> static_configs, for a promtool
                                                 built without Kubernetes discovery (Debian's)

Each prints what it checked and exits non-zero on the first kind of problem it finds (listing all).
"""

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# The sections of the configuration file (cluster-config/src/model.rs, struct Config).
CONFIG_SECTIONS = {"node", "cluster", "sessions", "security", "limits", "http", "faults", "log"}


def load_docs(path):
    with open(path, encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_container(kind, name, pod, container, problems):
    """Hardening, probes and volumes every playground container must have."""
    where = f"{kind}/{name} container {container['name']}"
    psc = pod.get("securityContext", {})
    csc = container.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot is not set")
    if not csc.get("readOnlyRootFilesystem"):
        problems.append(f"{where}: readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        problems.append(f"{where}: capabilities do not drop ALL")
    if psc.get("runAsUser", csc.get("runAsUser", 1)) == 0:
        problems.append(f"{where}: runs as uid 0")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = container.get(probe, {}).get("httpGet", {}).get("path")
        if got != path:
            problems.append(f"{where}: {probe} checks {got!r}, not {path}")
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if "emptyDir" not in volumes.get(mounts.get("/tmp", ""), {}):
        problems.append(f"{where}: /tmp is not an emptyDir")
    if "/data" not in mounts:
        problems.append(f"{where}: no volume at /data (the data dir)")
    env = env_of(container)
    if env.get("PLAYGROUND_DATA_DIR", {}).get("value") != "/data":
        problems.append(f"{where}: PLAYGROUND_DATA_DIR is not /data")
    node_id = env.get("PLAYGROUND_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
    if node_id != "metadata.name":
        problems.append(f"{where}: PLAYGROUND_NODE_ID does not come from metadata.name")
    if container.get("imagePullPolicy") != "IfNotPresent":
        problems.append(f"{where}: imagePullPolicy is not IfNotPresent")
    for secret in ("PLAYGROUND_COOKIE", "PLAYGROUND_ADMIN_TOKEN"):
        if "secretKeyRef" not in env.get(secret, {}).get("valueFrom", {}):
            problems.append(f"{where}: {secret} does not come from a Secret")
    return env


def check_manifests(path):
    docs = load_docs(path)
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    config_maps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    services = {d["metadata"]["name"]: d for d in by_kind.get("Service", [])}

    for cm in config_maps.values():
        text = cm.get("data", {}).get("playground.toml")
        if text is None:
            continue
        try:
            parsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            problems.append(f"ConfigMap/{cm['metadata']['name']}: playground.toml is not TOML: {e}")
            continue
        unknown = set(parsed) - CONFIG_SECTIONS
        if unknown:
            problems.append(f"ConfigMap/{cm['metadata']['name']}: unknown sections {sorted(unknown)}")

    statefulsets = by_kind.get("StatefulSet", [])
    if len(statefulsets) != 1:
        problems.append(f"expected one StatefulSet (the nodes), found {len(statefulsets)}")
    for sts in statefulsets:
        name, spec = sts["metadata"]["name"], sts["spec"]
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        env = check_container("StatefulSet", name, pod, container, problems)
        replicas = spec.get("replicas", 1)
        service = spec.get("serviceName")
        headless = services.get(service)
        if headless is None or headless["spec"].get("clusterIP") != "None":
            problems.append(f"StatefulSet/{name}: serviceName {service!r} is not a headless Service here")
        elif not headless["spec"].get("publishNotReadyAddresses"):
            problems.append(f"Service/{service}: publishNotReadyAddresses must be true (bootstrap needs the names)")
        if spec.get("podManagementPolicy") != "Parallel":
            problems.append(f"StatefulSet/{name}: podManagementPolicy must be Parallel (readiness needs a quorum)")
        claims = [c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])]
        data_mount = next((m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/data"), None)
        if data_mount not in claims:
            problems.append(f"StatefulSet/{name}: /data is not a volumeClaimTemplate (a PVC per pod)")
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        seeds_ref = env.get("PLAYGROUND_SEEDS", {}).get("valueFrom", {}).get("configMapKeyRef", {})
        cm = config_maps.get(seeds_ref.get("name"))
        if cm is None:
            problems.append(f"StatefulSet/{name}: PLAYGROUND_SEEDS does not come from a ConfigMap here")
            continue
        seeds = [s.strip() for s in cm["data"][seeds_ref["key"]].split(",") if s.strip()]
        if len(seeds) != replicas:
            problems.append(f"StatefulSet/{name}: {replicas} replicas but {len(seeds)} seeds: {seeds}")
        for i, seed in enumerate(seeds):
            m = re.fullmatch(r"([A-Za-z0-9._-]+)@([a-z0-9.-]+):(\d+)", seed)
            if not m:
                problems.append(f"seed {seed!r} is not id@host:port")
                continue
            sid, host, port = m.group(1), m.group(2), int(m.group(3))
            pod_name = f"{name}-{i}"
            if sid != pod_name:
                problems.append(f"seed {i} has id {sid!r}, but the pod (and so its node.id) is {pod_name!r}")
            if host != f"{pod_name}.{service}" and not host.startswith(f"{pod_name}.{service}."):
                problems.append(f"seed {i}: host {host!r} is not the stable name {pod_name}.{service}[...]")
            if port != ports.get("cluster"):
                problems.append(f"seed {i}: port {port} is not the container's cluster port {ports.get('cluster')}")
            if len(sid) > 63:
                problems.append(f"seed {i}: id {sid!r} is longer than a DNS label")
        listen = env.get("PLAYGROUND_CLUSTER_LISTEN", {}).get("value", "")
        if not listen.endswith(f":{ports.get('cluster')}"):
            problems.append(f"StatefulSet/{name}: PLAYGROUND_CLUSTER_LISTEN {listen!r} is not the cluster port")

    for dep in by_kind.get("Deployment", []):
        pod = dep["spec"]["template"]["spec"]
        for container in pod["containers"]:
            check_container("Deployment", dep["metadata"]["name"], pod, container, problems)

    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        if hpa["apiVersion"] != "autoscaling/v2":
            problems.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: not autoscaling/v2")

    for sec in by_kind.get("Secret", []):
        values = sec.get("stringData", {})
        for key in ("cookie", "token-key", "admin-token"):
            if key not in values and key not in sec.get("data", {}):
                problems.append(f"Secret/{sec['metadata']['name']}: no key {key}")

    kinds = ", ".join(f"{k}×{len(v)}" for k, v in sorted(by_kind.items()))
    return problems, f"{path}: {kinds}"


def check_servicemonitor(path):
    monitors = [d for d in load_docs(path) if d["kind"] == "ServiceMonitor"]
    problems = []
    if not monitors:
        problems.append("no ServiceMonitor rendered")
    for m in monitors:
        name = m["metadata"].get("name", "?")
        if m.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append(f"ServiceMonitor/{name}: apiVersion {m.get('apiVersion')}")
        spec = m.get("spec", {})
        allowed = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels"}
        if set(spec) - allowed:
            problems.append(f"ServiceMonitor/{name}: unexpected spec keys {sorted(set(spec) - allowed)}")
        if not spec.get("selector", {}).get("matchLabels"):
            problems.append(f"ServiceMonitor/{name}: no selector.matchLabels")
        for ep in spec.get("endpoints", []) or [None]:
            if not ep or "port" not in ep:
                problems.append(f"ServiceMonitor/{name}: an endpoint without a port")
                continue
            if ep.get("path", "/metrics") != "/metrics":
                problems.append(f"ServiceMonitor/{name}: endpoint path {ep['path']}")
            for k in ("interval", "scrapeTimeout"):
                if k in ep and not re.fullmatch(r"(\d+(ms|s|m|h))+", str(ep[k])):
                    problems.append(f"ServiceMonitor/{name}: {k} {ep[k]!r} is not a duration")
    return problems, f"{path}: {len(monitors)} ServiceMonitor(s)"


GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
}


def panels_of(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])


def dashboard_rules(out, files):
    problems, rules = [], []
    for f in files:
        dash = json.loads(Path(f).read_text(encoding="utf-8"))
        ids = set()
        for p in panels_of(dash):
            if p.get("id") in ids:
                problems.append(f"{f}: panel id {p.get('id')} repeats")
            ids.add(p.get("id"))
            for t in p.get("targets", []):
                expr = t.get("expr")
                if not expr:
                    continue
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                if "$" in expr:
                    problems.append(f"{f}: panel {p.get('title')!r}: unknown variable in {expr!r}")
                rules.append({"record": f"dashboard:panel_{p['id']}:{t.get('refId', 'A').lower()}", "expr": expr})
    Path(out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    return problems, f"{len(rules)} dashboard queries written to {out}"


def check_grafana():
    problems = []
    prov = ROOT / "deploy/grafana/provisioning"
    uids = set()
    for f in sorted((prov / "datasources").glob("*.yaml")):
        for ds in yaml.safe_load(f.read_text()).get("datasources", []):
            uids.add(ds.get("uid"))
            if ds.get("type") != "prometheus":
                problems.append(f"{f}: data source {ds.get('name')} is not prometheus")
    if not uids:
        problems.append("no provisioned data source")
    providers = [p for f in sorted((prov / "dashboards").glob("*.yaml")) for p in yaml.safe_load(f.read_text())["providers"]]
    if not any(p.get("type") == "file" and p.get("options", {}).get("path") for p in providers):
        problems.append("no file dashboard provider with a path")
    for f in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        dash = json.loads(f.read_text())
        variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
        default_ds = variables.get("datasource", {}).get("current", {}).get("value")
        if default_ds not in uids:
            problems.append(f"{f}: default data source {default_ds!r} is not a provisioned uid {sorted(uids)}")
        for p in panels_of(dash):
            if p.get("type") != "row" and p.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"{f}: panel {p.get('title')!r} does not use the $datasource variable")
    return problems, f"grafana: data sources {sorted(uids)}, {len(providers)} dashboard provider(s)"


def strip_k8s_sd(src, dst):
    config = yaml.safe_load(Path(src).read_text())
    n = 0
    for job in config.get("scrape_configs", []):
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["placeholder:9000"]}]
            n += 1
    Path(dst).write_text(yaml.safe_dump(config))
    return [], f"{n} kubernetes_sd_configs replaced by a static target in {dst}"


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "manifests":
        problems, summary = check_manifests(args[0])
    elif cmd == "servicemonitor":
        problems, summary = check_servicemonitor(args[0])
    elif cmd == "dashboard-rules":
        problems, summary = dashboard_rules(args[0], args[1:])
    elif cmd == "grafana":
        problems, summary = check_grafana()
    elif cmd == "strip-k8s-sd":
        problems, summary = strip_k8s_sd(args[0], args[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"  problem: {p}")
    print(f"  {summary}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
