"""mbi_predict: who benefits from mindfulness-based interventions, from individual participant data of many trials."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mbi-predict")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
    __version__ = "0.0.0+unknown"
