"""How fast the input gate refuses hostile YAML: each resource bomb of tests/reliability/test_hostile_yaml.py
(billion laughs, deep nesting, huge lists and lines) and a 50 MB profile, loaded as a recipe or profile,
refused with one line. The tests check that the work is bounded (memory held); this prints the seconds.

    python benchmarks/input_gate.py [--repeat N] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, machine_lines, ms, table, write_section

sys.path.insert(0, str(REPO))

from launcher.config.profile import load_profile  # noqa: E402
from launcher.config.recipe import load_recipe  # noqa: E402
from launcher.core.errors import UserError  # noqa: E402
from tests.reliability.test_hostile_yaml import BOMBS  # noqa: E402

BAR_S = 1.0  # a refusal should never make a user wait


def refusal_seconds(load, path: str) -> float:
    started = time.perf_counter()
    try:
        load(path)
    except UserError:
        return time.perf_counter() - started
    raise SystemExit(f"{path} was accepted")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        cases = []
        for name, text in BOMBS.items():
            path = Path(root, f"{name}.yaml")
            path.write_text(text)
            cases.append((name, len(text), load_recipe, str(path)))
        huge = Path(root, "huge.yaml")
        with open(huge, "wb") as handle:
            handle.truncate(50 * 1024 * 1024)
        cases.append(("50 MB profile", huge.stat().st_size, load_profile, str(huge)))
        for name, size, load, path in cases:
            times = [refusal_seconds(load, path) for _ in range(args.repeat)]
            median = statistics.median(times)
            rows.append((name, f"{size:,}", ms(median), ms(max(times)), "ok" if max(times) < BAR_S else "SLOW"))
    body = "\n".join([*machine_lines(), "", table(("input", "bytes", "median", "max", f"< {BAR_S:g} s"), rows)])
    print(body)
    if not args.no_write:
        write_section("input_gate", body)
    return 0 if all(row[-1] == "ok" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
