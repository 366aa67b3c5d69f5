"""The instrument registry: ranges, direction, reliability and norms of each supported questionnaire.

The registry ships inside the package (`mbi_predict/resources/instruments.yaml`) so a harmonisation run never depends
on a file next to the user's data; a spec can still point at its own registry to add instruments. Every number that
standardisation, range checks and the reliable change index need comes from here, never from code.
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path
from typing import Annotated

from mbi_predict.io import parse_yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from mbi_predict.data.schema import CONSTRUCTS, HIGHER_IS_WORSE
from mbi_predict.errors import SpecError


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Instrument:
    """One questionnaire, scored as the plain sum of its items (after reverse keying)."""

    name: str
    construct: str
    items: Annotated[int, Field(gt=0)]
    item_min: int
    item_max: int
    higher_is_worse: bool
    reliability: Annotated[float, Field(gt=0, lt=1)]
    reliability_source: str
    norm_mean: float
    norm_sd: Annotated[float, Field(gt=0)]
    norm_source: str
    reverse_items: tuple[int, ...] = ()
    total_min: int | None = None
    total_max: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Instrument":
        if self.construct not in CONSTRUCTS:
            raise ValueError(f"construct {self.construct!r} is not one of {', '.join(CONSTRUCTS)}")
        if self.item_max <= self.item_min:
            raise ValueError("item_max must exceed item_min")
        bad = [k for k in self.reverse_items if not 1 <= k <= self.items]
        if bad:
            raise ValueError(f"reverse_items {bad} outside 1..{self.items}")
        # The total range is implied by the items; a declared one must agree or range checks would contradict scoring.
        implied = (self.items * self.item_min, self.items * self.item_max)
        declared = (self.total_min, self.total_max)
        if declared != (None, None) and declared != implied:
            raise ValueError(f"total range {declared} disagrees with the item range, which implies {implied}")
        object.__setattr__(self, "total_min", implied[0])
        object.__setattr__(self, "total_max", implied[1])
        if not self.total_min <= self.norm_mean <= self.total_max:
            raise ValueError("norm_mean lies outside the total range")
        return self

    def orientation(self, construct: str | None = None) -> float:
        """+1 if a higher total means more of `construct` (default: the instrument's own construct), else -1.

        All construct names read upwards (more distress, more wellbeing); an instrument only needs flipping when its
        direction disagrees with the construct it stands for.
        """
        construct = construct or self.construct
        return 1.0 if self.higher_is_worse == HIGHER_IS_WORSE[construct] else -1.0

    @property
    def rci_factor(self) -> float:
        """sqrt(2 * (1 - reliability)): S_diff / SD in the Jacobson-Truax reliable change index."""
        return math.sqrt(2.0) * math.sqrt(1.0 - self.reliability)


def _parse_registry(text: str, source: str) -> dict[str, Instrument]:
    raw = parse_yaml(text, source=source, error=SpecError)
    if not isinstance(raw, dict):
        raise SpecError("an instrument registry must map instrument names to their properties", file=source)
    registry: dict[str, Instrument] = {}
    for name, fields in raw.items():
        try:
            registry[str(name)] = Instrument(name=str(name), **(fields or {}))
        except (ValidationError, TypeError) as exc:
            detail = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
            key = ".".join(str(p) for p in detail["loc"])
            msg = str(detail["msg"]).removeprefix("Value error, ")
            raise SpecError(f"instrument {name}: {key + ': ' if key else ''}{msg}", file=source) from None
    return registry


@functools.cache
def default_registry() -> dict[str, Instrument]:
    """The registry shipped with the package (cached: it is read once per process)."""
    text = resources.files("mbi_predict.resources").joinpath("instruments.yaml").read_text(encoding="utf-8")
    return _parse_registry(text, "instruments.yaml")


def load_registry(path: str | Path | None = None) -> dict[str, Instrument]:
    """The shipped registry, extended (or overridden, name by name) by the YAML file at `path` if given."""
    registry = dict(default_registry())
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read instrument registry: {exc.strerror or exc}", file=str(path)) from None
        registry.update(_parse_registry(text, str(path)))
    return registry


def get_instrument(name: str, registry: dict[str, Instrument] | None = None) -> Instrument:
    registry = default_registry() if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise SpecError(f"unknown instrument {name!r}") from None
