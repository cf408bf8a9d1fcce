#!/usr/bin/env python3
"""Checks docker/compose.yaml without Docker: against the Compose specification's JSON schema, and
against the project (every pipeline stage served, every DOCPIPE_ override naming a real key, the
broker addresses and the S3 endpoint naming services of the file, build targets existing).

    python3 scripts/check-compose.py [docker/compose.yaml]

The schema is the one Docker's own docker-compose 1.29.2 validated with (compose/config/
compose_spec.json in its PyPI wheel, sha256-pinned), fetched once into var/cache. Prints one line
per problem and exits 1 if there is any.
"""
import hashlib
import json
import pathlib
import re
import subprocess
import sys
import tomllib
import zipfile

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
WHEEL = "docker_compose-1.29.2-py2.py3-none-any.whl"
WHEEL_SHA256 = "8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809"


def schema():
    cache = ROOT / "var" / "cache" / "compose-schema"
    wheel = cache / WHEEL
    if not wheel.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "docker-compose==1.29.2", "-d", str(cache)], check=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        sys.exit(f"check-compose: {wheel} hashes to {digest}, not the pinned {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z:
        return json.loads(z.read("compose/config/compose_spec.json"))


def main():
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docker" / "compose.yaml"
    compose = yaml.safe_load(path.read_text())
    pipeline = tomllib.loads((ROOT / "pipeline.toml").read_text())
    problems = []

    validator = jsonschema.Draft7Validator(schema())
    for error in sorted(validator.iter_errors(compose), key=lambda e: list(e.path)):
        problems.append(f"schema: {'/'.join(map(str, error.path)) or '(top)'}: {error.message}")

    services = compose.get("services", {})
    served = set()
    for name, service in services.items():
        command = service.get("command") or []
        if "worker" in command:
            stages = command[command.index("--stages") + 1].split(",") if "--stages" in command else [s["name"] for s in pipeline["stage"]]
            served.update(stages)
        for key, value in (service.get("environment") or {}).items():
            problems.extend(f"{name}: {p}" for p in check_override(pipeline, key, value, services))
        build = service.get("build")
        if isinstance(build, dict) and "target" in build:
            dockerfile = (path.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
            targets = re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text())
            if build["target"] not in targets:
                problems.append(f"{name}: build target {build['target']} is not a stage of {dockerfile.name} ({', '.join(targets)})")
    for stage in pipeline["stage"]:
        if stage["name"] not in served:
            problems.append(f"stage {stage['name']} is served by no worker service")
    for stage in served - {s["name"] for s in pipeline["stage"]}:
        problems.append(f"a service serves {stage}, which pipeline.toml does not have")
    brokers = [n for n in services if n.startswith("rabbitmq")]
    if len(brokers) != 3:
        problems.append(f"{len(brokers)} RabbitMQ nodes, not 3")

    for p in problems:
        print(p)
    print(f"check-compose: {path.name}: {len(services)} services, stages served: {', '.join(sorted(served))}; {len(problems)} problems")
    sys.exit(1 if problems else 0)


def check_override(pipeline, key, value, services):
    """A DOCPIPE_SECTION__KEY override must name a key pipeline.toml has (or documents in a
    comment), and addresses in it must name services of the file."""
    if not key.startswith("DOCPIPE_") or "__" not in key:
        return []
    parts = key[len("DOCPIPE_"):].lower().split("__")
    node = pipeline
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return [f"{key}: pipeline.toml has no section {part}"]
        node = node[part]
    text = (ROOT / "pipeline.toml").read_text()
    if parts[-1] not in node and not re.search(rf"(?m)^#\s*{re.escape(parts[-1])}\s*=", text):
        return [f"{key}: pipeline.toml has no key {parts[-1]} in {'.'.join(parts[:-1])}"]
    problems = []
    for host in re.findall(r"(?:amqps?|https?)://(?:[^@/\s\"]+@)?([A-Za-z0-9_.-]+)", str(value)):
        if host not in services:
            problems.append(f"{key}: {host} is not a service of the file")
    return problems


if __name__ == "__main__":
    main()
