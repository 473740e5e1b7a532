#!/usr/bin/env bash
# Validates every manifest in deploy/ offline against the API schemas of a pinned Kubernetes
# version (kubernetes-validate from PyPI, strict: unknown fields are errors).
#
# kubernetes-validate knows the built-in kinds only. The one custom resource here,
# VolumeSnapshotClass (snapshot.storage.k8s.io/v1, a CRD of the external-snapshotter
# project), is checked against its CRD's schema as written below; any other kind without a
# schema fails the check instead of passing with a warning.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S_VERSION=${K8S_VERSION:-1.37.0}
command -v kubernetes-validate >/dev/null ||
    { echo "kubernetes-validate is missing (hack/install-deps.sh)"; exit 1; }

out=$(kubernetes-validate -k "$K8S_VERSION" --strict deploy/*.yaml 2>&1) || {
    echo "$out"
    exit 1
}
echo "$out" | grep -v "Couldn't find schema for kind VolumeSnapshotClass " || true
if echo "$out" | grep "Couldn't find schema" | grep -qv "kind VolumeSnapshotClass "; then
    echo "a manifest has a kind with no schema to validate it against"
    exit 1
fi

python3 - deploy/*.yaml <<'EOF_PY'
import sys, yaml, jsonschema
# snapshot.storage.k8s.io/v1 VolumeSnapshotClass (external-snapshotter's CRD, v8).
schema = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "driver", "deletionPolicy"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "snapshot.storage.k8s.io/v1"},
        "kind": {"const": "VolumeSnapshotClass"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "driver": {"type": "string", "minLength": 1},
        "deletionPolicy": {"enum": ["Delete", "Retain"]},
        "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
n = 0
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "VolumeSnapshotClass":
            try:
                jsonschema.validate(doc, schema)
            except jsonschema.ValidationError as e:
                sys.exit(f"{path}: VolumeSnapshotClass: {e.message}")
            print(f"INFO {path} passed for resource volumesnapshotclass/{doc['metadata']['name']} (CRD schema)")
            n += 1
if n == 0:
    sys.exit("no VolumeSnapshotClass found in deploy/")
EOF_PY
echo "deploy/: every manifest valid for Kubernetes $K8S_VERSION"
