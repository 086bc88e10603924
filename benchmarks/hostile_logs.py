"""How long `minitron logs` and `status` take on a hostile stage log (issue 24), and how long redacting
one long line takes. tests/reliability/test_huge_logs.py checks the memory is bounded and the output
right on the same 100+ MB log; this prints the seconds.

    python benchmarks/hostile_logs.py [--no-write]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, machine_lines, ms, table, write_section

sys.path.insert(0, str(REPO))

from launcher.core.errors import one_line  # noqa: E402
from launcher.core.files import TAIL_BYTES  # noqa: E402
from tests.reliability.test_huge_logs import MiB, Logs, _measured  # noqa: E402

BAR_S = 1.0  # the end of a log, a status, or one line redacted: never a wait


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    # Runs of word characters that almost look like a key: before issue 24 each took time quadratic in
    # its length (a 64 KiB one ~30 s); `status` redacts the last lines of a log, up to TAIL_BYTES long.
    for name, run in (("letters", "a"), ("lower-case and digits", "ab1"), ("'eyJ' repeated", "eyJ"),
                      ("'TOKEN_' repeated", "TOKEN_")):
        line = run * (TAIL_BYTES // len(run))
        started = time.perf_counter()
        one_line(line)
        took = time.perf_counter() - started
        rows.append((f"redact one {TAIL_BYTES // 1024} KiB line: {name}", "-", ms(took),
                     "ok" if took < BAR_S else "SLOW"))
    with tempfile.TemporaryDirectory() as root:
        logs = Logs(Path(root))
        size = logs.huge_log.stat().st_size
        for command, bar in ((["logs", "finetune", "-n", "50"], True), (["logs", "finetune", "-n", "0"], False),
                             (["status", "--json"], True), (["status"], True)):
            started = time.perf_counter()
            code, peak, _, err = _measured([command[0], logs.huge_run, *command[1:]], logs.env, lambda chunk: None)
            took = time.perf_counter() - started
            if code not in (0, 4):
                raise SystemExit(f"{' '.join(command)} failed: {err}")
            verdict = ("ok" if took < BAR_S else "SLOW") if bar else f"{size / MiB / took:.0f} MiB/s"
            rows.append((f"minitron {' '.join(command)} (log of {size / MiB:.0f} MiB)", f"{peak / MiB:.0f} MiB",
                         ms(took), verdict))
        (logs.sandbox.root / "readonly").chmod(0o755)
    body = "\n".join([*machine_lines(), "", table(("what", "peak RSS", "time", f"< {BAR_S:g} s"), rows)])
    print(body)
    if not args.no_write:
        write_section("hostile_logs", body)
    return 0 if all(row[-1] != "SLOW" for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
