#!/usr/bin/env bash
# Fetch, here (network, pip), everything the GPU device (no network; Python 3.12, torch 2.11 + CUDA 13 image)
# needs to run the stage jobs with and without Transformer Engine. One command, from anywhere:
#
#   tools/device/fetch_device_wheels.sh [STACK]
#
#   .whl/*.whl            NeMo 2.7.3's set (tools/device/device-wheels.txt; its two sdist-only packages built here)
#   .whl/overlay/         first on PYTHONPATH there: NeMo's pins of lightning/transformers (device-overlay.txt)
#   .whl-te/py/           Transformer Engine 2.12: the Python package, nvdlfw_inspect, the sdist of the torch
#                         extension (no binary wheel exists: tools/device/device_te.sh builds it on the device)
#                         and SHA256SUMS of the core wheel
#   .whl-te/parts/        the core wheel transformer_engine_cu13 (181 MiB, > one call's 64 MiB) cut into 3 parts
#   .whl-stack/           with STACK (a row of tools/device/stacks/, e.g. 26.02): the wheels in which that
#                         container's NeMo stack differs from the base set (device_te.sh puts them first for TE)
#
# .whl/ and .whl-te/ are git-ignored. What each device call carries: tools/device/device_te.sh.
# Idempotent (pip skips what is there). Environment: PY (python running pip; default python3). Every fetch goes
# to the index pip is configured with (pip.conf, PIP_INDEX_URL): no address is written here.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python3}
TE_VERSION=2.12.0
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_31_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
mkdir -p .whl/overlay .whl-te/py .whl-te/parts

# 1. the NeMo set and the overlay
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .whl -r <(grep -v '^#' tools/device/device-wheels.txt | grep .)
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .whl/overlay -r <(grep -v '^#' tools/device/device-overlay.txt | grep .)
for spec in antlr4-python3-runtime==4.9.3 wget==3.2; do  # sdist only, pure Python: built once here
    stem=$(echo "${spec%%==*}" | tr - _)
    ls .whl/"$stem"-*.whl >/dev/null 2>&1 || "$PY" -m pip wheel -q --no-deps -w .whl "$spec"
done

# 2. Transformer Engine
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .whl-te/py "transformer_engine==$TE_VERSION" "nvdlfw_inspect==0.2.2"
"$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .whl-te "transformer_engine_cu13==$TE_VERSION"
sdist=.whl-te/py/transformer_engine_torch-$TE_VERSION.tar.gz
if [ ! -f "$sdist" ]; then
    # `pip download` of this sdist fails preparing its metadata (its setup.py needs a CUDA build of torch), so
    # the file comes from the simple-index page of the index pip is configured with (PIP_INDEX_URL, or
    # index-url in pip.conf's [download] or [global]; pip's default without one), with pip's certificate
    # bundle, and is checked against the sha256 the index gives
    "$PY" - "$TE_VERSION" "$sdist" "$PY" <<'PYEOF'
import hashlib, re, ssl, subprocess, sys, urllib.parse, urllib.request
version, dest, python = sys.argv[1:]
listed = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
config = dict(line.split("=", 1) for line in listed.splitlines() if "=" in line)
def setting(name):  # pip's order: the environment, then the command's section, then [global]
    keys = (f":env:.{name}", f"download.{name}", f"global.{name}")
    return next((config[k].strip("'\"") for k in keys if k in config), None)
index = setting("index-url")
if index is None:
    from pip._internal.models.index import PyPI  # pip's own default index, not a copy of its address
    index = PyPI.simple_url
context = ssl.create_default_context(cafile=setting("cert"))
page_url = index.rstrip("/") + "/transformer-engine-torch/"
page = urllib.request.urlopen(page_url, context=context).read().decode()
href = next(h for h in re.findall(r'href="([^"]+)"', page) if f"transformer_engine_torch-{version}.tar.gz" in h)
url = urllib.parse.urljoin(page_url, href)
data = urllib.request.urlopen(url.split("#")[0], context=context).read()
want = url.split("#sha256=")[1]
if hashlib.sha256(data).hexdigest() != want:
    sys.exit(f"sha256 mismatch for {url}")
open(dest, "wb").write(data)
PYEOF
fi
core=$(ls .whl-te/transformer_engine_cu13-"$TE_VERSION"-*.whl)
(cd .whl-te && sha256sum "$(basename "$core")" > py/SHA256SUMS)
rm -f .whl-te/parts/*
split -d -a 2 -n 3 "$core" ".whl-te/parts/$(basename "$core").part-"
if [ -n "${1:-}" ]; then  # 3. a container row's stack
    rm -rf .whl-stack && mkdir -p .whl-stack
    "$PY" -m pip download -q --no-deps "${PLAT[@]}" -d .whl-stack -r <(grep -v '^#' "tools/device/stacks/$1.txt" | grep .)
    du -sh .whl-stack
fi
du -sh .whl .whl/overlay .whl-te/py .whl-te/parts/*
