"""The `mbi-predict` command line with a pause at a named point, so a kill test can send its signal at exactly that
point instead of after a guessed delay.

    python kill_shim.py harmonise spec.yaml --out ...

with ``MBI_KILL_PAUSE=<module>:<attribute path>`` (e.g. ``mbi_predict.data.publish:_write_table``): the N-th call
(``MBI_KILL_CALL``, default 1) of that function, counting only calls whose last positional argument ends with
``MBI_KILL_WHEN`` when that is set (e.g. the destination given to ``os.replace``), writes the file
``MBI_KILL_MARKER`` and then sleeps ``MBI_KILL_SECONDS`` (default 120) before doing what it was called to do.
Everything else is the real command: the pause only holds the process where the test wants to signal it. Test code
only.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import time
from pathlib import Path


def _install() -> None:
    # the command sets this before anything imports MLflow; the pause below may import it first
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    target = os.environ.get("MBI_KILL_PAUSE")
    if not target:
        return
    module_name, _, attribute = target.partition(":")
    *owner_path, name = attribute.split(".")
    owner = importlib.import_module(module_name)
    for part in owner_path:
        owner = getattr(owner, part)
    real = getattr(owner, name)
    marker = Path(os.environ["MBI_KILL_MARKER"])
    nth = int(os.environ.get("MBI_KILL_CALL", "1"))
    when = os.environ.get("MBI_KILL_WHEN")
    seconds = float(os.environ.get("MBI_KILL_SECONDS", "120"))
    calls = [0]

    @functools.wraps(real)
    def paused(*args, **kwargs):
        if when is None or (args and str(args[-1]).endswith(when)):
            calls[0] += 1
            if calls[0] == nth:
                marker.write_text(str(os.getpid()))
                time.sleep(seconds)
        return real(*args, **kwargs)

    setattr(owner, name, paused)


if __name__ == "__main__":
    _install()
    from mbi_predict.cli import app

    sys.argv[0] = "mbi-predict"
    app()
