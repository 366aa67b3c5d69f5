"""``python -m mbi_predict.cli``: the same app as the ``mbi-predict`` console script."""

import sys

from mbi_predict.cli import app

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
