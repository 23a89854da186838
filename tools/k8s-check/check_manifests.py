"""Offline checks of the Kubernetes manifests in deploy/k8s/.

    python check_manifests.py deploy/k8s [--built FILE]

1. Schemas. Every built-in object is validated with kubernetes-validate
   against the upstream Kubernetes JSON schemas of the oldest supported
   version (1.30) and of the newest the package bundles, in their strict
   flavour (an unknown or misspelt field is an error). The KEDA objects are
   validated against the JSON schema of the KEDA 2.16 CRDs (from the
   cloudcoil-models-keda models), made strict the same way. A kind with no
   schema is an error.
2. Agreement with the code and with each other (hand-written): container
   commands are binaries the Dockerfile builds, the image is the one
   docker-compose.yml uses, ports match the LUCID_* settings (or the
   defaults in jobs/src), probe paths are routes the binary serves, every
   LUCID_* key is a variable the code knows, grace periods outlast
   LUCID_SHUTDOWN_GRACE_SECS, Services and PodDisruptionBudgets select a
   Deployment, referenced ConfigMaps, Secrets and keys exist, and the KEDA
   triggers name real queue keys.
3. With --built (the output of `kubectl kustomize`): the same schemas on what
   would be applied, the same objects, all in the kustomization's namespace.

Exits 1 and prints every problem when anything fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = Path(__file__).resolve().parents[2]
OLDEST_KUBERNETES = "1.30"  # the API's preStop `sleep` action needs it
KEDA_KINDS = ("ScaledObject", "TriggerAuthentication")

# Which LUCID_* setting holds the port each binary listens on, and the files
# where its HTTP routes are declared.
BINARIES = {
    "lucid-api": ("LUCID_NODE_API_PORT", ["api/src/routes/mod.rs"]),
    "lucid-worker": ("LUCID_WORKER_HEALTH_PORT", ["workers/src/health.rs"]),
    "lucid-scheduler": ("LUCID_SCHEDULER__METRICS_PORT", ["scheduler/src/lib.rs"]),
}
# Connection strings and secrets: only in a Secret, never in the ConfigMap.
SECRET_KEYS = {"LUCID_JWT_SECRET", "LUCID_MONGODB_URL", "LUCID_REDIS_URL", "LUCID_POSTGRES_URL"}
STORE_URLS = SECRET_KEYS - {"LUCID_JWT_SECRET"}
# URL schemes accepted by Settings::validate (jobs/src/config.rs).
URL_SCHEMES = {
    "LUCID_MONGODB_URL": ("mongodb://", "mongodb+srv://"),
    "LUCID_REDIS_URL": ("redis://", "rediss://", "unix://"),
    "LUCID_POSTGRES_URL": ("postgres://", "postgresql://"),
}
# Settings that must not be shared by every pod through the ConfigMap.
NOT_SHARED = {
    "LUCID_WORKER_NAME": "must differ per process (the default does)",
    "LUCID_DEV_MODE": "development only",
}
# Parameters of KEDA's `redis` scaler (trigger metadata / TriggerAuthentication).
REDIS_TRIGGER_METADATA = {
    "address", "addresses", "host", "hosts", "port", "ports", "username", "password",
    "listName", "listLength", "activationListLength", "databaseIndex", "enableTLS",
    "unsafeSsl", "addressFromEnv", "hostFromEnv", "portFromEnv", "usernameFromEnv",
    "passwordFromEnv",
}
REDIS_AUTH_PARAMS = {
    "address", "addresses", "host", "hosts", "port", "ports", "username", "password",
    "tls", "ca", "cert", "key", "keyPassword",
}
# A resource quantity (k8s.io/apimachinery/pkg/api/resource): the JSON
# schemas only say "string or number".
QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
          "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


class Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def expect(self, ok: bool, where: str, message: str) -> bool:
        if not ok:
            self.fail(where, message)
        return ok


# --- reading the code -------------------------------------------------------


def source(path: str) -> str:
    return (ROOT / path).read_text()


def rust_default(path: str, field: str) -> int:
    """`field: 123,` in a Rust `Default` impl."""
    m = re.search(rf"\b{field}:\s*([0-9_]+),", source(path))
    if not m:
        raise SystemExit(f"cannot find the default of {field} in {path}")
    return int(m.group(1).replace("_", ""))


def code_facts() -> dict[str, Any]:
    routes = {
        binary: {r for f in files for r in re.findall(r'\.route\(\s*"([^"]+)"', source(f))}
        for binary, (_, files) in BINARIES.items()
    }
    known_vars = set()
    for f in [*(ROOT / "jobs/src").rglob("*.rs"), ROOT / "README.md"]:
        known_vars |= set(re.findall(r"\bLUCID_[A-Z0-9_]*[A-Z0-9]", f.read_text()))
    dockerfile_bins = set(re.findall(r"--bin\s+(\S+)", source("Dockerfile")))
    compose = yaml.safe_load(source("docker-compose.yml"))
    images = {s["image"] for s in compose["services"].values() if "lucid" in s.get("image", "")}
    return {
        "routes": routes,
        "known_vars": known_vars,
        "binaries": dockerfile_bins,
        "image": {i.rsplit(":", 1)[0] for i in images},
        "queues": set(re.findall(r'pub const \w+_QUEUE: &str = "([^"]+)";', source("jobs/src/queue/types.rs"))),
        "defaults": {
            "LUCID_NODE_API_PORT": rust_default("jobs/src/config.rs", "node_api_port"),
            "LUCID_WORKER_HEALTH_PORT": rust_default("jobs/src/config.rs", "worker_health_port"),
            "LUCID_SCHEDULER__METRICS_PORT": rust_default("jobs/src/schedule/mod.rs", "metrics_port"),
            "LUCID_SHUTDOWN_GRACE_SECS": rust_default("jobs/src/config.rs", "shutdown_grace_secs"),
            "LUCID_QUEUE_PREFIX": "lucid",
        },
    }


# --- schemas ----------------------------------------------------------------


def strict(schema: Any) -> Any:
    """Forbids properties a schema does not list, like the strict Kubernetes schemas."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def keda_validators() -> dict[str, jsonschema.protocols.Validator]:
    from cloudcoil.models.keda import v1alpha1 as keda

    out = {}
    for kind in KEDA_KINDS:
        schema = strict(getattr(keda, kind).model_json_schema(by_alias=True))
        jsonschema.Draft202012Validator.check_schema(schema)
        out[kind] = jsonschema.Draft202012Validator(schema)
    return out


def check_schemas(c: Checker, docs: list[tuple[str, dict]], keda: dict) -> None:
    versions = [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]
    for where, doc in docs:
        kind = doc.get("kind")
        if kind in KEDA_KINDS and doc.get("apiVersion") == "keda.sh/v1alpha1":
            for e in keda[kind].iter_errors(doc):
                c.fail(where, f"KEDA 2.16 schema: {'.'.join(map(str, e.path)) or '(root)'}: {e.message}")
            continue
        for v in versions:
            try:
                kubernetes_validate.validate(doc, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                c.fail(where, f"Kubernetes {e.version} schema: {'.'.join(map(str, e.path)) or '(root)'}: {e.message}")
            except SchemaNotFoundError:
                c.fail(where, f"no schema for {doc.get('apiVersion')} {kind} in Kubernetes {v}")


# --- loading ----------------------------------------------------------------


def load(path: Path) -> Iterator[dict]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            yield doc


def ident(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# --- cross-checks -----------------------------------------------------------


def check_kustomization(c: Checker, directory: Path, kust: dict, facts: dict) -> None:
    where = "kustomization.yaml"
    files = sorted(p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
    c.expect(sorted(kust.get("resources", [])) == files, where,
             f"resources {kust.get('resources')} must list exactly the files here: {files}")
    for image in kust.get("images", []):
        c.expect(image.get("name") in facts["image"], where,
                 f"images: {image.get('name')} is not the image docker-compose.yml uses ({facts['image']})")


def check_settings(c: Checker, by_kind: dict, facts: dict) -> None:
    for cm in by_kind.get("ConfigMap", []):
        where = ident(cm)
        for key, value in (cm.get("data") or {}).items():
            c.expect(key in facts["known_vars"], where, f"{key} is not a variable the code reads")
            c.expect(key not in SECRET_KEYS, where, f"{key} belongs in a Secret")
            if key in NOT_SHARED:
                c.fail(where, f"{key} {NOT_SHARED[key]}")
            if key.endswith("_PORT"):
                c.expect(str(value).isdigit() and 0 < int(value) < 65536, where, f"{key}={value!r} is not a port")
    for secret in by_kind.get("Secret", []):
        where = ident(secret)
        for key, value in (secret.get("stringData") or {}).items():
            if not key.startswith("LUCID_"):
                continue
            c.expect(key in facts["known_vars"], where, f"{key} is not a variable the code reads")
            if key in URL_SCHEMES:
                c.expect(str(value).startswith(URL_SCHEMES[key]), where,
                         f"{key} must start with one of {URL_SCHEMES[key]} (jobs/src/config.rs)")
        if secret["metadata"]["name"] == "lucid-secrets":
            data = secret.get("stringData") or {}
            c.expect(SECRET_KEYS <= set(data), where, f"needs {sorted(SECRET_KEYS - set(data))}")
            url = str(data.get("LUCID_MONGODB_URL", ""))
            c.expect("replicaSet=" in url or url.startswith("mongodb+srv://"), where,
                     "LUCID_MONGODB_URL must name a replica set (transactions need one)")


def secret_keys(by_kind: dict) -> dict[str, set[str]]:
    return {s["metadata"]["name"]: set((s.get("stringData") or {}) | (s.get("data") or {}))
            for s in by_kind.get("Secret", [])}


def setting(by_kind: dict, facts: dict, key: str) -> Any:
    for cm in by_kind.get("ConfigMap", []):
        if key in (cm.get("data") or {}):
            return cm["data"][key]
    return facts["defaults"][key]


def container_env(c: Checker, where: str, container: dict, by_kind: dict) -> set[str]:
    """The variable names a container gets; checks that each reference resolves."""
    configmaps = {cm["metadata"]["name"]: set(cm.get("data") or {}) for cm in by_kind.get("ConfigMap", [])}
    secrets = secret_keys(by_kind)
    names = set()
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            if c.expect(name in configmaps, where, f"envFrom: no ConfigMap {name}"):
                names |= configmaps[name]
        if "secretRef" in src:
            name = src["secretRef"]["name"]
            if c.expect(name in secrets, where, f"envFrom: no Secret {name}"):
                names |= secrets[name]
    for env in container.get("env", []):
        names.add(env["name"])
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            c.expect(ref["key"] in secrets.get(ref["name"], set()), where,
                     f"env {env['name']}: no key {ref['key']} in Secret {ref['name']}")
    return names


def check_deployment(c: Checker, dep: dict, by_kind: dict, facts: dict) -> None:
    where = ident(dep)
    pod = dep["spec"]["template"]["spec"]
    c.expect(pod.get("enableServiceLinks") is False, where,
             "enableServiceLinks must be false (service links add LUCID_*_PORT=tcp://... variables)")
    c.expect(pod.get("automountServiceAccountToken") is False, where, "automountServiceAccountToken must be false")
    psc = pod.get("securityContext", {})
    c.expect(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot must be true")
    c.expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "seccompProfile must be RuntimeDefault")
    grace = int(setting(by_kind, facts, "LUCID_SHUTDOWN_GRACE_SECS"))
    for ctr in pod["containers"]:
        cw = f"{where} container {ctr['name']}"
        binary = Path((ctr.get("command") or [""])[0]).name
        if not c.expect(binary in facts["binaries"] and binary in BINARIES, cw,
                        f"command {ctr.get('command')} is not a binary the Dockerfile builds ({sorted(facts['binaries'])})"):
            continue
        c.expect(ctr["image"].rsplit(":", 1)[0] in facts["image"], cw,
                 f"image {ctr['image']} is not the one docker-compose.yml uses ({facts['image']})")
        port_var, _ = BINARIES[binary]
        port = int(setting(by_kind, facts, port_var))
        ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
        c.expect(port in ports.values(), cw, f"no containerPort {port} ({port_var})")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            http = ctr.get(probe, {}).get("httpGet")
            if not c.expect(http is not None, cw, f"needs an httpGet {probe}"):
                continue
            target = ports.get(http["port"], http["port"])
            c.expect(target == port, cw, f"{probe} port {http['port']} is not {port_var}={port}")
            c.expect(http["path"] in facts["routes"][binary], cw,
                     f"{probe} path {http['path']} is not a route of {binary} ({sorted(facts['routes'][binary])})")
        c.expect(ctr.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/health", cw,
                 "livenessProbe must use /health (a store outage must not restart pods)")
        res = ctr.get("resources", {})
        for part in ("requests", "limits"):
            c.expect({"cpu", "memory"} <= set(res.get(part, {})), cw, f"resources.{part} needs cpu and memory")
        for name in ("cpu", "memory"):
            req, lim = (quantity(res.get(part, {}).get(name, 0)) for part in ("requests", "limits"))
            if c.expect(None not in (req, lim), cw, f"resources {name}: not a quantity"):
                c.expect(req <= lim, cw, f"resources {name}: request above limit")
        sc = ctr.get("securityContext", {})
        c.expect(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation must be false")
        c.expect(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem must be true")
        c.expect("ALL" in sc.get("capabilities", {}).get("drop", []), cw, "capabilities must drop ALL")
        env = container_env(c, cw, ctr, by_kind)
        needs = STORE_URLS | ({"LUCID_JWT_SECRET"} if binary == "lucid-api" else set())
        c.expect(needs <= env, cw, f"does not get {sorted(needs - env)}")
        pre_stop = ctr.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        need = pre_stop + grace + 5
        c.expect(pod.get("terminationGracePeriodSeconds", 30) >= need, where,
                 f"terminationGracePeriodSeconds must be at least {need} "
                 f"(preStop {pre_stop} s + LUCID_SHUTDOWN_GRACE_SECS {grace} s + 5 s)")


def quantity(value: Any) -> float | None:
    m = QUANTITY.match(str(value))
    if not m:
        return None
    number, suffix = m.group(1), m.group(2) or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:  # an exponent, not the E (exa) suffix
        return float(number + suffix)
    return float(number) * SUFFIX[suffix]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selected(deployments: list[dict], selector: dict) -> list[dict]:
    return [d for d in deployments if selects(selector, d["spec"]["template"]["metadata"]["labels"])]


def check_selectors(c: Checker, by_kind: dict) -> None:
    deployments = by_kind.get("Deployment", [])
    for dep in deployments:
        c.expect(selects(dep["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"]),
                 ident(dep), "selector does not match its own pod template")
    for svc in by_kind.get("Service", []):
        hits = selected(deployments, svc["spec"].get("selector", {}))
        if c.expect(len(hits) == 1, ident(svc), f"selects {len(hits)} Deployments, not 1"):
            names = {p.get("name") for ctr in hits[0]["spec"]["template"]["spec"]["containers"] for p in ctr.get("ports", [])}
            for p in svc["spec"]["ports"]:
                c.expect(p.get("targetPort") in names, ident(svc), f"targetPort {p.get('targetPort')} is not a named port of {ident(hits[0])}")
    covered: dict[str, int] = {}
    for pdb in by_kind.get("PodDisruptionBudget", []):
        hits = selected(deployments, pdb["spec"]["selector"].get("matchLabels", {}))
        if c.expect(len(hits) == 1, ident(pdb), f"selects {len(hits)} Deployments, not 1"):
            covered[ident(hits[0])] = covered.get(ident(hits[0]), 0) + 1
    for dep in deployments:
        c.expect(covered.get(ident(dep)) == 1, ident(dep), "needs exactly one PodDisruptionBudget")


def check_keda(c: Checker, by_kind: dict, facts: dict) -> None:
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    auths = {a["metadata"]["name"]: a for a in by_kind.get("TriggerAuthentication", [])}
    secrets = secret_keys(by_kind)
    prefix = setting(by_kind, facts, "LUCID_QUEUE_PREFIX")
    ready_keys = {f"{prefix}:q:{q}:ready": q for q in facts["queues"]}
    for auth in auths.values():
        for ref in auth["spec"].get("secretTargetRef", []):
            c.expect(ref["key"] in secrets.get(ref["name"], set()), ident(auth), f"no key {ref['key']} in Secret {ref['name']}")
            c.expect(ref["parameter"] in REDIS_AUTH_PARAMS, ident(auth), f"{ref['parameter']} is not a redis scaler parameter")
    for so in by_kind.get("ScaledObject", []):
        where = ident(so)
        spec = so["spec"]
        target = deployments.get(spec["scaleTargetRef"]["name"])
        if c.expect(target is not None, where, f"scaleTargetRef {spec['scaleTargetRef']['name']} is not a Deployment here"):
            c.expect("replicas" not in target["spec"], ident(target),
                     "must not set replicas: the HorizontalPodAutoscaler owns the count")
        c.expect(spec.get("minReplicaCount", 0) >= 1, where,
                 "minReplicaCount must be at least 1 (workers promote due retries and recover dead workers' jobs)")
        for trig in spec["triggers"]:
            tw = f"{where} trigger {trig.get('name', trig['type'])}"
            if not c.expect(trig["type"] == "redis", tw, "only the redis scaler is expected here"):
                continue
            meta = trig["metadata"]
            c.expect(set(meta) <= REDIS_TRIGGER_METADATA, tw, f"unknown redis scaler metadata {sorted(set(meta) - REDIS_TRIGGER_METADATA)}")
            c.expect(meta.get("listName") in ready_keys, tw,
                     f"listName {meta.get('listName')!r} is not a queue's ready set ({sorted(ready_keys)})")
            c.expect(str(meta.get("listLength", "")).isdigit() and int(meta["listLength"]) > 0, tw,
                     "listLength must be a positive integer")
            params = set(meta)
            ref = trig.get("authenticationRef", {}).get("name")
            if ref is not None and c.expect(ref in auths, tw, f"no TriggerAuthentication {ref}"):
                params |= {r["parameter"] for r in auths[ref]["spec"].get("secretTargetRef", [])}
            c.expect(bool(params & {"address", "addresses", "host", "hosts", "addressFromEnv", "hostFromEnv"}), tw,
                     "no Redis address (metadata or TriggerAuthentication)")


def check_built(c: Checker, built: list[dict], raw: list[dict], kust: dict) -> None:
    c.expect(sorted(map(ident, built)) == sorted(map(ident, raw)), "kustomize build",
             "does not hold the same objects as the files")
    namespace = kust.get("namespace")
    for doc in built:
        if doc["kind"] != "Namespace":
            c.expect(doc["metadata"].get("namespace") == namespace, f"kustomize build {ident(doc)}",
                     f"is not in namespace {namespace}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--built", type=Path, help="output of `kubectl kustomize DIRECTORY`")
    args = parser.parse_args()

    c = Checker()
    facts = code_facts()
    keda = keda_validators()
    kust = yaml.safe_load((args.directory / "kustomization.yaml").read_text())
    docs = [(f"{p.name} {ident(d)}", d) for p in sorted(args.directory.glob("*.yaml"))
            if p.name != "kustomization.yaml" for d in load(p)]
    raw = [d for _, d in docs]
    seen: set[str] = set()
    for where, doc in docs:
        c.expect(ident(doc) not in seen, where, "defined twice")
        seen.add(ident(doc))
    by_kind: dict[str, list[dict]] = {}
    for doc in raw:
        by_kind.setdefault(doc["kind"], []).append(doc)

    check_schemas(c, docs, keda)
    check_kustomization(c, args.directory, kust, facts)
    check_settings(c, by_kind, facts)
    for dep in by_kind.get("Deployment", []):
        check_deployment(c, copy.deepcopy(dep), by_kind, facts)
    check_selectors(c, by_kind)
    check_keda(c, by_kind, facts)
    count = f"{len(raw)} objects in {args.directory}"
    if args.built:
        built = list(load(args.built))
        check_schemas(c, [(f"kustomize build {ident(d)}", d) for d in built], keda)
        check_built(c, built, raw, kust)
        count += f", {len(built)} in its kustomize build"

    kinds = ", ".join(f"{len(v)} {k}" for k, v in sorted(by_kind.items()))
    newest = kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version())
    print(f"checked {count} ({kinds}) against Kubernetes {OLDEST_KUBERNETES} and "
          f"{newest} (kubernetes-validate {kubernetes_validate.__version__}, strict) "
          f"and the KEDA 2.16 CRD schema")
    for problem in c.problems:
        print(f"ERROR {problem}", file=sys.stderr)
    if c.problems:
        print(f"deploy/k8s: {len(c.problems)} problem(s)", file=sys.stderr)
        return 1
    print("deploy/k8s: no problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
