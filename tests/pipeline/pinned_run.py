"""The pinned run: one small experiment whose summary.json numbers are kept in ``data/pinned_summary.json``, so a
refactor that changes any number for the same seed is caught (``test_pinned.py``).

Regenerate the pinned numbers after a deliberate change of results (e.g. a new harm-group definition in
``validate/groups.py``), and say so in the commit::

    .venv/bin/python tests/pipeline/pinned_run.py --regen
    # or, equivalently, through pytest:
    MBI_REGEN_PINNED=1 .venv/bin/python -m pytest -q -n 0 tests/pipeline/test_pinned.py

Compared: every key of the summary and every value (numbers with rtol 1e-9, everything else exactly), except the
values that are not results: timestamps (``created``), durations (every ``timing`` block, ``seconds`` and
``*_seconds`` keys), provenance of the code (``git_commit``, ``package_version``) and MLflow ids (tracking is off;
they are None). The keys themselves are compared everywhere, these included.

The run happens in a child process with ``PYTHONHASHSEED=0``: the policy block's "most frequent rule"
(``validate.groups_summary``) breaks ties between equally frequent rules in set-iteration order, which depends on
the process's string-hash seed, so without a fixed hash seed that one string differs from process to process.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

PINNED = Path(__file__).parent / "data" / "pinned_summary.json"
REGEN_ENV = "MBI_REGEN_PINNED"
RTOL = 1e-9
ATOL = 1e-12

#: values that are not results: compared by key only
VOLATILE_KEYS = frozenset({"created", "timing", "seconds", "git_commit", "package_version", "mlflow_run_id"})
#: the string-hash seed of the child process that runs the pinned config (see the module docstring)
HASH_SEED = "0"

CONFIG: dict[str, Any] = {
    "experiment": "pinned",
    "data": {"simulate": {"scenario": "galante2023", "seed": 7, "n_trials": 5, "n": 600}},
    "outcome": "distress_fu1_6",
    "study_traits": ["setting"],
    "models": [
        {"name": "reference", "kind": "prognostic", "estimator": "reference"},
        {"name": "xgboost", "kind": "prognostic", "estimator": "xgboost", "params": {"n_estimators": 30}},
        {"name": "interaction_linear", "kind": "effect", "estimator": "interaction_linear",
         "explain": {"enabled": True, "max_rows": 40, "max_background": 20, "top_k": 3, "null_B": 3,
                     "dependence_top": 1}},
        {"name": "t_learner_xgb", "kind": "effect", "estimator": "t_learner_xgb"},
    ],
    "validation": {"bootstrap": 20, "n_jobs": 1, "hksj": True},
    "heterogeneity": {"null_B": 19},
    "explain": {"enabled": True, "max_rows": 40, "max_background": 20, "top_k": 3, "null_B": 0,
                "dependence_top": 1},
    "tracking": {"enabled": False},
    "seed": 7,
}


def run_pinned(out_dir: str | Path) -> dict[str, Any]:
    """The pinned config run into ``out_dir`` (in a child process with a fixed string-hash seed); its summary as
    written to summary.json."""
    import os
    import subprocess

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    code = ("import json, sys; from mbi_predict.runner import run_experiment; "
            "run_experiment(json.load(open(sys.argv[1])), out_dir=sys.argv[2], progress=False)")
    env = {**os.environ, "PYTHONHASHSEED": HASH_SEED}
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(out_dir / "config.json"),
                           str(out_dir / "run")], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        raise RuntimeError(f"the pinned run failed:\n{done.stderr[-4000:]}")
    return json.loads((out_dir / "run" / "summary.json").read_text(encoding="utf-8"))


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every place where ``actual`` differs from ``expected`` (keys, types, values), as readable lines."""
    key = path.rsplit(".", 1)[-1]
    if key in VOLATILE_KEYS or key.endswith("_seconds"):
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{path}.{k}: missing" for k in expected if k not in actual]
        out += [f"{path}.{k}: unexpected new key" for k in actual if k not in expected]
        for k in expected:
            if k in actual:
                out += differences(expected[k], actual[k], f"{path}.{k}")
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: {len(actual)} items, pinned {len(expected)}"]
        return [line for i, (e, a) in enumerate(zip(expected, actual)) for line in differences(e, a, f"{path}[{i}]")]
    numbers = (int, float)
    if isinstance(expected, numbers) and isinstance(actual, numbers) and not isinstance(expected, bool) \
            and not isinstance(actual, bool):
        if math.isnan(expected) and math.isnan(actual):
            return []
        if math.isclose(expected, actual, rel_tol=RTOL, abs_tol=ATOL):
            return []
        return [f"{path}: {actual!r}, pinned {expected!r}"]
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: {actual!r}, pinned {expected!r}"]
    return []


def regenerate(out_dir: str | Path) -> Path:
    summary = run_pinned(out_dir)
    PINNED.parent.mkdir(parents=True, exist_ok=True)
    PINNED.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return PINNED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regen", action="store_true", help=f"rewrite {PINNED.name} from a fresh run")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        if args.regen:
            print(f"wrote {regenerate(folder)}")
            return 0
        found = differences(json.loads(PINNED.read_text(encoding="utf-8")), run_pinned(folder))
    print("\n".join(found) if found else "same results as pinned")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
