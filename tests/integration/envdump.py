"""A test stage (`python -m envdump --config STAGE.json`): records the environment each task sees in
work/<stage>/env-<rank>.json, then behaves exactly like `workload`.

Variables named in MT_SECRET_NAMES (comma-separated) are recorded as `sha256:<hex>` of their value,
never the value itself, so a test can check that a job saw a secret without the secret landing on disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import workload


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    config = json.load(open(parser.parse_known_args()[0].config))
    secret_names = set(filter(None, os.environ.get("MT_SECRET_NAMES", "").split(",")))
    seen = {name: "sha256:" + hashlib.sha256(value.encode()).hexdigest() if name in secret_names else value
            for name, value in os.environ.items()}
    rank = os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0"))
    work = os.path.join(config["work_dir"], config["stage"])
    os.makedirs(work, exist_ok=True)
    workload.atomic_write(os.path.join(work, f"env-{rank}.json"), json.dumps(seen))
    return workload.main()


if __name__ == "__main__":
    sys.exit(main())
