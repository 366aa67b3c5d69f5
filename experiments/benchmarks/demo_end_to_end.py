"""Time ``mbi-predict demo`` end to end, as a user runs it, and its peak memory.

    .venv/bin/python experiments/benchmarks/demo_end_to_end.py [--quick] [--repeat N] [--out FILE]

Runs the CLI in a subprocess into a temporary folder (so no state from earlier runs is reused) and reports wall
time and the peak resident memory of the largest child process (``RUSAGE_CHILDREN``; loky workers included,
as each is a descendant that has been waited for). Target: <= 30 s on an idle 2-core machine (issue 18). ``--quick`` is the same single run.

Each invocation appends one row to ``--out`` (default ``demo_end_to_end.jsonl`` here): every run's wall and CPU
seconds, the peak, and the provenance (commit, time, load at start and end) the README's table is built from
(``readme_table.py``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GIB, append_row, machine, peak_rss_bytes, provenance  # noqa: E402

import resource  # noqa: E402

TARGET_SECONDS = 30.0  # issue 18 (was 60 s, issue 8)


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("mbi-predict")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mbi_predict.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run (the default is also one run)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("demo_end_to_end.jsonl"))
    args = parser.parse_args()
    print(f"machine: {machine()}")
    started = provenance()
    times, cpus = [], []
    for k in range(args.repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = Path(tempfile.mkdtemp(prefix="mbi-demo-bench-"))
        try:
            start = time.perf_counter()
            done = subprocess.run(cli() + ["demo", "--out", str(out / "demo")], cwd=out, capture_output=True,
                                  text=True)
            seconds = time.perf_counter() - start
        finally:
            shutil.rmtree(out, ignore_errors=True)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            raise SystemExit(f"mbi-predict demo failed with exit status {done.returncode}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(seconds)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        print(f"run {k + 1}: wall {seconds:.1f} s, CPU {cpus[-1]:.1f} s")
    peak = peak_rss_bytes(resource.RUSAGE_CHILDREN)
    print(f"CPU of the demo and its reaped workers: {sum(cpus) / len(cpus):.1f} s per run "
          f"(on an idle machine wall time is roughly this divided by the cores in use)")
    best = min(times)
    import yaml

    from mbi_predict.demo import demo_config_path

    models = len(yaml.safe_load(demo_config_path().read_text(encoding="utf-8"))["models"])
    append_row(args.out, {"benchmark": "demo_end_to_end", "models": models, "wall_seconds": times, "cpu_seconds": cpus,
                          "peak_child_rss_gib": peak / GIB, "target_seconds": TARGET_SECONDS,
                          "provenance": provenance(started)})
    print(f"demo end to end: wall {best:.1f} s (best of {len(times)}), peak child RSS {peak / GIB:.2f} GiB; "
          f"target <= {TARGET_SECONDS:.0f} s: {'MET' if best <= TARGET_SECONDS else 'MISSED'}")


if __name__ == "__main__":
    main()
