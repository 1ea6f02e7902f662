#!/usr/bin/env python3
"""Applies one attack of SECURITY.md to a fresh `playground node` and prints what a normal client saw.

    deploy/scripts/attack.py slow-bodies --binary target/release/playground [--connections 1100]
    deploy/scripts/attack.py bad-methods --binary target/release/playground [--count 5000]

Each run starts its own node over a temporary data directory on a free loopback port, and stops it
afterwards. The output is one JSON object: the attack's size and the figures it is judged by. Run it
against two binaries (before and after a change) to compare them.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

PASSWORD = "Tr0mbone-Saddle-Quiver-88"


def start_node(binary, data_dir, env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    full_env.update({"PLAYGROUND_ARGON2_MEMORY_KIB": "1024", "PLAYGROUND_ARGON2_ITERATIONS": "1",
                     "RUST_LOG": "error,openraft=off"})
    full_env.update(env)
    node = subprocess.Popen([binary, "node", "--http", "127.0.0.1:0", "--data-dir", data_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=full_env, text=True)
    for line in node.stdout:
        if line.startswith("listening on "):
            return node, line.split("listening on ", 1)[1].strip()
    raise SystemExit(f"{binary}: the node did not start")


def call(url, method="GET", body=None, token=None, timeout=30):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def signup(base):
    email = f"attack-{time.time_ns()}@example.com"
    status, body = call(f"{base}/v1/users", "POST", {"email": email, "name": "Normal User", "password": PASSWORD})
    if status != 201:
        raise SystemExit(f"register: {status} {body[:200]!r}")
    user = json.loads(body)["id"]
    status, body = call(f"{base}/v1/sessions", "POST", {"email": email, "password": PASSWORD})
    if status != 201:
        raise SystemExit(f"login: {status} {body[:200]!r}")
    return user, json.loads(body)["token"]


def metrics_bytes(base):
    return len(call(f"{base}/metrics")[1])


def slow_bodies(base, args):
    user, token = signup(base)
    host, port = base.removeprefix("http://").split(":")
    head = (f"POST /v1/orders HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").encode()
    held = []
    for _ in range(args.connections):
        s = socket.create_connection((host, int(port)))
        s.sendall(head)
        held.append(s)
    time.sleep(2)
    statuses = {}
    for _ in range(args.requests):
        status, _ = call(f"{base}/v1/users/{user}", token=token)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    for s in held:
        s.close()
    return {"attack": "slow-bodies", "slow_connections": args.connections, "normal_requests": args.requests,
            "normal_answers": statuses}


def bad_methods(base, args):
    before = metrics_bytes(base)
    host, port = base.removeprefix("http://").split(":")
    for i in range(args.count):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(f"MADEUP{i} /v1/users HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            while s.recv(65536):
                pass
    after = metrics_bytes(base)
    return {"attack": "bad-methods", "requests": args.count, "metrics_bytes_before": before,
            "metrics_bytes_after": after, "metrics_growth_bytes": after - before}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("attack", choices=["slow-bodies", "bad-methods"])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    env = {}
    help_text = subprocess.run([args.binary, "--help"], capture_output=True, text=True).stdout
    if args.attack == "slow-bodies" and "PLAYGROUND_BODY_READ_TIMEOUT" in help_text:
        # The attack lasts as long as the run, whatever the default deadline (a binary without one
        # has no such variable, and would refuse it).
        env["PLAYGROUND_BODY_READ_TIMEOUT"] = "300s"
    with tempfile.TemporaryDirectory() as data_dir:
        node, base = start_node(args.binary, data_dir, env)
        try:
            result = slow_bodies(base, args) if args.attack == "slow-bodies" else bad_methods(base, args)
        finally:
            node.terminate()
            node.wait(timeout=30)
    result["binary"] = args.binary
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
