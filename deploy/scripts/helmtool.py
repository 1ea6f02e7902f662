#!/usr/bin/env python3
"""`helm lint` and `helm template` for machines without the helm binary.

Uses helm-python-sdk (PyPI), whose wheel bundles libhelm_c: Helm v4's own Go engine (chart loading,
values coalescing, the template engine and the linter) behind a C ABI. So the chart is rendered and
linted by real Helm, not a re-implementation. Where a `helm` binary exists, validate.sh uses it instead.

    helmtool.py version
    helmtool.py lint CHART [-f VALUES]... [--kube-version v1.32.0]
    helmtool.py template CHART [--name NAME] [--namespace NS] [-f VALUES]... [--kube-version ...]
"""

import argparse
import sys

import yaml


def merge(base, override):
    """Helm's -f semantics: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base.get(k), v) if k in base else v
        return out
    return override


def load_values(files):
    values = {}
    for f in files or []:
        with open(f, encoding="utf-8") as fh:
            values = merge(values, yaml.safe_load(fh) or {})
    return values


def main():
    import helm_python as helm

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("version")
    for name in ("lint", "template"):
        s = sub.add_parser(name)
        s.add_argument("chart")
        s.add_argument("-f", "--values", action="append", default=[])
        s.add_argument("--kube-version", default="v1.32.0")
        if name == "template":
            s.add_argument("--name", default="release-name")
            s.add_argument("--namespace", default="default")
    a = p.parse_args()

    if a.cmd == "version":
        print(f"helm engine {helm.helm_sdk_version()} (libhelm_c {helm.helm_c_version()}, helm-python-sdk)")
        return 0

    values = load_values(a.values)
    if a.cmd == "lint":
        report = helm.lint(a.chart, values or None, strict=True, kube_version=a.kube_version)
        names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
        for m in report.get("messages", []):
            print(f"[{names.get(m.get('severity'), '?')}] {m.get('path')}: {m.get('error')}")
        errors = report.get("errors") or []
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        # Strict, like `helm lint --strict`: a warning fails too.
        bad = errors or any(m.get("severity", 0) >= 2 for m in report.get("messages", []))
        print(f"{report.get('total_charts_linted', 0)} chart(s) linted, {'failed' if bad else 'no failures'}")
        return 1 if bad else 0

    with helm.Chart.load(a.chart) as chart:
        manifests = chart.render(values or None, name=a.name, namespace=a.namespace, is_install=True)
    for path in sorted(manifests):
        text = manifests[path]
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        sys.stdout.write(f"---\n# Source: {path}\n{text.strip()}\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # the engine's errors (HelmRenderError, ...) carry Helm's own message
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
