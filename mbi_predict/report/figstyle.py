"""One figure style for every plot of the package: palette, fonts, sizes, file format and resolution.

* Palette: Okabe & Ito (2008), distinguishable with the common colour-vision deficiencies and in greyscale by
  lightness; ``PALETTE`` names the roles (``estimate``, ``pooled``, ``reference``...) so plots agree on meaning.
* Fonts and sizes: ``RC`` (matplotlib rcParams), applied with ``style()`` around building AND saving a figure.
* Format and resolution: ``png`` (default), ``svg`` or ``pdf``, at ``DEFAULT_DPI`` (150) unless asked otherwise.
  The run's choice travels in two environment variables (``MBI_FIGURE_FORMAT``, ``MBI_FIGURE_DPI``) set by
  ``set_defaults`` (``mbi-predict run --figure-format/--dpi``), so figures rendered in worker processes (the
  runner plots in loky workers, which inherit the environment) follow it without every call passing it on.
  An explicit ``format=``/``dpi=`` argument always wins.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot state); ``save_figure`` writes them atomically.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbi_predict.errors import ConfigError

FORMATS = ("png", "svg", "pdf")
DEFAULT_FORMAT = "png"
DEFAULT_DPI = 150
MIN_DPI, MAX_DPI = 50, 1200
FORMAT_ENV, DPI_ENV = "MBI_FIGURE_FORMAT", "MBI_FIGURE_DPI"
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
    format: str = DEFAULT_FORMAT
    dpi: int = DEFAULT_DPI

    @property
    def suffix(self) -> str:
        return f".{self.format}"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


def check_format(value: str, *, where: str = "--figure-format") -> str:
    text = str(value).lower().lstrip(".")
    if text not in FORMATS:
        raise ConfigError(f"{where} must be one of {', '.join(FORMATS)}, not {value!r}")
    return text


def check_dpi(value: Any, *, where: str = "--dpi") -> int:
    try:
        dpi = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a whole number of dots per inch, not {value!r}") from None
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise ConfigError(f"{where} must be between {MIN_DPI} and {MAX_DPI}, not {dpi}")
    return dpi


def settings(format: str | None = None, dpi: int | None = None) -> FigureSettings:
    """The figure settings in force: explicit arguments, else the environment (``set_defaults``), else defaults."""
    fmt = format or os.environ.get(FORMAT_ENV) or DEFAULT_FORMAT
    resolution = dpi if dpi is not None else os.environ.get(DPI_ENV) or DEFAULT_DPI
    return FigureSettings(check_format(fmt), check_dpi(resolution))


def set_defaults(format: str | None = None, dpi: int | None = None) -> FigureSettings:
    """Make ``format``/``dpi`` the process's (and its future worker processes') figure settings."""
    chosen = settings(format, dpi)
    os.environ[FORMAT_ENV], os.environ[DPI_ENV] = chosen.format, str(chosen.dpi)
    return chosen


def from_config(config: Any) -> FigureSettings:
    """Settings from a config mapping's ``figures: {format, dpi}`` block (absent keys: defaults/environment)."""
    block = (config or {}).get("figures") if isinstance(config, dict) else getattr(config, "figures", None)
    if block is None:
        return settings()
    if not isinstance(block, dict):
        block = {"format": getattr(block, "format", None), "dpi": getattr(block, "dpi", None)}
    unknown = set(block) - {"format", "dpi"}
    if unknown:
        raise ConfigError(f"figures: unknown key(s) {', '.join(sorted(unknown))}; use format and dpi")
    return FigureSettings(check_format(block.get("format") or settings().format, where="figures.format"),
                          check_dpi(block.get("dpi") or settings().dpi, where="figures.dpi"))


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
    """Write ``figure`` atomically as ``<path>.<format>`` at ``dpi`` (defaults: ``settings()``); returns the path.

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
