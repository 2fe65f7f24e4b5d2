#!/usr/bin/env python3
"""Strict validation of the custom resources in deploy/kubernetes/ (ServiceMonitor,
PrometheusRule), which kubernetes-validate has no schema for (it only warns and passes them).

Each is checked against the openAPIV3Schema of its CRD, as shipped by the Prometheus Operator
(v0.93.0, example/prometheus-operator-crd/, Apache-2.0; descriptions removed) and kept in
deploy/kubernetes/crd-schemas/. Like `kubectl apply --validate=strict`, an unknown field is an
error: every object schema that lists `properties` gets `additionalProperties: false`.
Usage: validate-crds.py FILE...   (files of other kinds are skipped)
"""
import json
import os
import sys

import jsonschema
import yaml

SCHEMAS = os.path.join(os.path.dirname(__file__), "..", "deploy", "kubernetes", "crd-schemas")


def strict(schema):
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    return schema


def main(paths):
    failed = checked = 0
    for path in paths:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        for doc in documents:
            if doc.get("apiVersion") != "monitoring.coreos.com/v1":
                continue
            kind = doc.get("kind", "")
            schema_file = os.path.join(SCHEMAS, f"{kind.lower()}-monitoring-v1.json")
            if not os.path.exists(schema_file):
                print(f"ERROR {path}: no schema for {kind}")
                failed += 1
                continue
            with open(schema_file) as f:
                schema = strict(json.load(f))
            # The CRD schema leaves metadata to the API server: check the parts we write.
            meta = doc.get("metadata", {})
            problems = [] if isinstance(meta.get("name"), str) else ["metadata.name missing"]
            validator = jsonschema.Draft7Validator(schema)
            problems += [
                f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
                for e in validator.iter_errors(doc)
            ]
            checked += 1
            for problem in problems:
                print(f"ERROR {path} ({kind}): {problem}")
            failed += bool(problems)
            if not problems:
                print(f"INFO {path} passed for {kind}/{meta.get('name')} (CRD schema)")
    if checked == 0:
        print("ERROR no ServiceMonitor or PrometheusRule found")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
