"""One figure style for every plot of the package: palette, fonts, sizes, file format and resolution.

* Palette: Okabe & Ito (2008), distinguishable with the common colour-vision deficiencies and in greyscale by
  lightness; ``PALETTE`` names the roles (``estimate``, ``pooled``, ``reference``...) so plots agree on meaning.
* Fonts and sizes: ``RC`` (matplotlib rcParams), applied with ``style()`` around building AND saving a figure.
* Format and resolution: ``png`` (default), ``svg`` or ``pdf``, at ``DEFAULT_DPI`` (150) unless asked otherwise.
  The choice is a `FigureSettings` handed to every writer explicitly (``format=``/``dpi=``). A run takes it from
  its config's ``figures:`` block (`config.FiguresConfig`; ``mbi-predict run --figure-format/--dpi`` override it),
  and the figures sink puts it into each plotting task it sends to a worker process. No environment variable
  carries it: a worker (loky, dask) need not share the parent's environment, and a value left in the environment
  would outlive the command that set it.

Why the base layer (beside `numbers`): the science layers draw figures too (`meta.plots`, `explain.plots`) and may
not import `report`, which sits above them. Figures are ``matplotlib.figure.Figure`` objects (no pyplot state);
``save_figure`` writes them atomically.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbi_predict.errors import ConfigError

__all__ = ["BLACK", "BLUE", "CYCLE", "DEFAULT_DPI", "DEFAULT_FORMAT", "DIVERGING", "EMBEDDABLE", "FORMATS", "GREEN",
           "GREY", "MAX_DPI", "MEDIA_TYPES", "MIN_DPI", "ORANGE", "PALETTE", "PURPLE", "RC", "SEQUENTIAL", "SKY",
           "VERMILION", "YELLOW", "FigureSettings", "check_dpi", "check_format", "dpi_problem", "format_problem",
           "from_config", "media_type", "new_figure", "png_dpi", "save_figure", "settings", "style", "target_path"]

FORMATS = ("png", "svg", "pdf")
DEFAULT_FORMAT = "png"
DEFAULT_DPI = 150
MIN_DPI, MAX_DPI = 50, 1200
MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}
#: formats a browser shows in an <img>
EMBEDDABLE = ("png", "svg")

# Okabe-Ito, by role
BLUE, ORANGE, SKY, GREEN, YELLOW, VERMILION, PURPLE, GREY, BLACK = (
    "#0072B2", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#D55E00", "#CC79A7", "#7F7F7F", "#000000")
PALETTE = {"estimate": BLUE, "pooled": VERMILION, "interval": BLACK, "prediction": VERMILION, "reference": GREY,
           "null": GREY, "highlight": ORANGE, "secondary": SKY, "good": GREEN, "muted": "#BBBBBB"}
#: colours for categories (arms, trials, models) in order
CYCLE = (BLUE, ORANGE, GREEN, VERMILION, SKY, PURPLE, YELLOW, BLACK)
#: a diverging colour map safe for colour-vision deficiencies (low = blue, high = vermilion/red)
DIVERGING = "RdBu_r"
SEQUENTIAL = "cividis"

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.labelsize": 9.0,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "axes.prop_cycle": None,  # filled below (needs matplotlib's cycler)
    "lines.linewidth": 1.4,
    "figure.dpi": 100,
    "savefig.dpi": DEFAULT_DPI,
    "savefig.bbox": "tight",
    "svg.fonttype": "none",      # text stays text in SVG (searchable, small)
    "pdf.fonttype": 42,          # TrueType in PDF: editable by journals
}


@dataclass(frozen=True)
class FigureSettings:
    """A figure file's format and resolution (checked: build it with `settings` or `from_config`)."""

    format: str = DEFAULT_FORMAT
    dpi: int = DEFAULT_DPI

    @property
    def suffix(self) -> str:
        return f".{self.format}"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


def format_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a figure format (None: nothing), worded to follow the setting's name."""
    if str(value).lower().lstrip(".") in FORMATS:
        return None
    return f"must be one of {', '.join(FORMATS)}, not {value!r}"


def dpi_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a resolution in dots per inch (None: nothing)."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole and isinstance(value, (float, str)):
        try:
            whole = float(value).is_integer()
        except ValueError:
            whole = False
    if not whole:
        return f"must be a whole number of dots per inch, not {value!r}"
    if not MIN_DPI <= int(float(value)) <= MAX_DPI:
        return f"must be between {MIN_DPI} and {MAX_DPI}, not {int(float(value))}"
    return None


def check_format(value: Any, *, where: str = "--figure-format") -> str:
    """``value`` as a known format (lower case, no dot); a one-line `ConfigError` naming ``where`` otherwise."""
    problem = format_problem(value)
    if problem is not None:
        raise ConfigError(f"{where} {problem}")
    return str(value).lower().lstrip(".")


def check_dpi(value: Any, *, where: str = "--dpi") -> int:
    """``value`` as a resolution within bounds; a one-line `ConfigError` naming ``where`` otherwise."""
    problem = dpi_problem(value)
    if problem is not None:
        raise ConfigError(f"{where} {problem}")
    return int(float(value))


def settings(format: str | None = None, dpi: int | None = None, *,
             base: FigureSettings | None = None) -> FigureSettings:
    """The figure settings to use: the explicit arguments, else ``base`` (e.g. a config's block), else the
    defaults (png at 150 dpi)."""
    base = base or FigureSettings()
    return FigureSettings(check_format(format if format is not None else base.format),
                          check_dpi(dpi if dpi is not None else base.dpi))


def from_config(config: Any) -> FigureSettings:
    """The settings of a config's ``figures:`` block: an `ExperimentConfig` (or anything with a ``figures``
    attribute), its `FiguresConfig` block, or a mapping of either (a summary's ``config``); absent: the defaults.
    A bad value is a one-line `ConfigError` naming ``figures.format`` / ``figures.dpi``."""
    if isinstance(config, Mapping):
        block = config.get("figures", config if {"format", "dpi"} & set(config) else None)
    else:
        block = getattr(config, "figures", config)
    if block is None:
        return FigureSettings()
    if isinstance(block, Mapping):
        unknown = set(block) - {"format", "dpi"}
        if unknown:
            raise ConfigError(f"figures: unknown key(s) {', '.join(sorted(map(str, unknown)))}; use format and dpi")
        fmt, dpi = block.get("format"), block.get("dpi")
    else:
        fmt, dpi = getattr(block, "format", None), getattr(block, "dpi", None)
    return FigureSettings(check_format(DEFAULT_FORMAT if fmt is None else fmt, where="figures.format"),
                          check_dpi(DEFAULT_DPI if dpi is None else dpi, where="figures.dpi"))


def _rc() -> dict[str, Any]:
    from cycler import cycler

    return {**RC, "axes.prop_cycle": cycler(color=list(CYCLE))}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The package's rcParams for the block (figures read most of them when built, some when saved)."""
    import matplotlib

    with matplotlib.rc_context(_rc()):
        yield


def new_figure(width: float, height: float) -> Any:
    """A pyplot-free Figure in the package style (call inside ``style()`` so text picks up the fonts)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout=None)


def target_path(path: str | os.PathLike[str], fmt: str) -> Path:
    """``path`` with the format's suffix (a name given with .png is re-suffixed for svg/pdf)."""
    path = Path(path)
    if path.suffix.lower().lstrip(".") in FORMATS:
        path = path.with_suffix("")
    return path.with_name(f"{path.name}.{fmt}")


def save_figure(figure: Any, path: str | os.PathLike[str], *, format: str | None = None,
                dpi: int | None = None) -> Path:
    """Write ``figure`` atomically as ``<path>.<format>`` at ``dpi`` (defaults: png, 150 dpi); returns the path.

    PNGs carry the resolution in their pHYs chunk, PDFs and SVGs are vector (their embedded rasters use ``dpi``).
    Metadata that would make identical figures differ byte for byte (creation dates) is left out.
    """
    from mbi_predict.io import save_figure_atomic

    chosen = settings(format, dpi)
    target = target_path(path, chosen.format)
    metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[chosen.format]
    with style():
        return save_figure_atomic(target, figure, dpi=chosen.dpi, metadata=metadata)


def media_type(path: str | os.PathLike[str]) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower().lstrip("."), "application/octet-stream")


def png_dpi(data: bytes) -> float | None:
    """The resolution a PNG declares (pHYs chunk, dots per inch), None when it declares none."""
    import struct

    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"pHYs":
            x, _, unit = struct.unpack(">IIB", data[offset + 8:offset + 17])
            return x * 0.0254 if unit == 1 else None
        if kind == b"IDAT":
            return None
        offset += 12 + length
    return None
