"""How each simulated trial team records its data: the profiles `rawsim` deals out to the simulated trials.

A profile is one team's habits: the file format, which instrument measures each construct and whether it is stored
as a total or as items, the column-name style, the arm, gender and education codings, the missing-value code, the
follow-up schedule in weeks, and whether participant ids are integers. The thirteen profiles cover the six formats
and the codings a harmoniser meets in practice; trial j gets profile j modulo 13.

Kept apart from `rawsim` (which builds and writes the raw files) because it is a table of data, not code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Profile:
    """How one simulated trial team records its data."""

    fmt: str
    instruments: dict[str, tuple[str, str]]  # construct -> (instrument, "items" | "total")
    style: str  # "snake" (phq9_t0, phq9_3_t0) or "upper" (PHQ9_T0, PHQ9_3_T0)
    arm_labels: tuple[Any, Any, Any]  # MBI, passive control, active control (codes where value labels are used)
    gender: dict[str, Any]
    education: dict[str, Any]
    missing: Any  # the code written for a missing value (None: left empty / system missing)
    schedule: tuple[int, int, int]  # weeks after the programme: post, fu1_6, fu6plus
    integer_ids: bool


_F, _M, _O = "female", "male", "other"
_S, _T = "secondary_or_less", "tertiary"
PROFILES: tuple[Profile, ...] = (
    Profile("csv", {"distress": ("CORE-10", "items"), "anxiety": ("GAD-7", "total"), "depression": ("PHQ-9", "items"),
                     "wellbeing": ("WEMWBS", "items"), "mindfulness": ("FFMQ-15", "items")},
             "snake", ("MBSR", "waitlist", "active control: exercise"), {_F: "F", _M: "M", _O: "X"},
             {_S: "school", _T: "university"}, -99, (0, 12, 52), False),
    Profile("sav", {"distress": ("K10", "total"), "anxiety": ("HADS-A", "items"), "depression": ("HADS-D", "items"),
                     "wellbeing": ("SWEMWBS", "total"), "mindfulness": ("MAAS", "items")},
             "upper", (1, 2, 3), {_F: 1, _M: 2, _O: 3}, {_S: 1, _T: 2}, 999, (2, 8, 36), True),
    Profile("dta", {"distress": ("GHQ-12", "items"), "anxiety": ("GAD-7", "items"), "depression": ("BDI-II", "total"),
                     "wellbeing": ("WEMWBS", "total"), "mindfulness": ("MAAS", "total")},
             "snake", (1, 0, 2), {_F: 2, _M: 1, _O: 3}, {_S: 0, _T: 1}, None, (0, 26, 78), True),
    Profile("xlsx", {"distress": ("DASS21", "total"), "anxiety": ("DASS21-A", "total"),
                      "depression": ("DASS21-D", "total"), "wellbeing": ("SWEMWBS", "items"),
                      "mindfulness": ("FFMQ-15", "total")},
             "upper", ("MBI", "Control", "Health education"), {_F: "Female", _M: "Male", _O: "Other"},
             {_S: "Secondary or less", _T: "Tertiary"}, None, (1, 16, 52), False),
    Profile("parquet", {"distress": ("CORE-10", "total"), "anxiety": ("STAI-T", "items"),
                         "depression": ("PHQ-9", "total"), "wellbeing": ("WEMWBS", "items"),
                         "mindfulness": ("FFMQ-15", "items")},
             "snake", ("mindfulness", "TAU", "relaxation"), {_F: "f", _M: "m", _O: "o"},
             {_S: "secondary", _T: "higher"}, None, (0, 12, 52), False),
    Profile("tsv", {"distress": ("K10", "items"), "anxiety": ("GAD-7", "total"), "depression": ("PHQ-9", "items"),
                     "wellbeing": ("WEMWBS", "total"), "mindfulness": ("MAAS", "total")},
             "upper", ("Intervention", "Wait list", "Active comparator"), {_F: 1, _M: 2, _O: 3}, {_S: 1, _T: 2},
             "NA", (0, 8, 52), True),
    Profile("csv", {"distress": ("GHQ-12", "total"), "anxiety": ("HADS-A", "total"),
                     "depression": ("HADS-D", "total"), "wellbeing": ("SWEMWBS", "total"),
                     "mindfulness": ("FFMQ-15", "total")},
             "snake", ("MBCT", "usual care", "psychoeducation"), {_F: "woman", _M: "man", _O: "non-binary"},
             {_S: "GCSE/A-level", _T: "degree"}, " ", (2, 12, 36), False),
    Profile("sav", {"distress": ("CORE-10", "items"), "anxiety": ("GAD-7", "items"), "depression": ("BDI-II", "items"),
                     "wellbeing": ("WEMWBS", "items"), "mindfulness": ("FFMQ-15", "items")},
             "upper", (1, 2, 3), {_F: 1, _M: 2, _O: 3}, {_S: 1, _T: 2}, -99, (0, 26, 52), True),
    Profile("dta", {"distress": ("K10", "total"), "anxiety": ("STAI-T", "total"), "depression": ("PHQ-9", "total"),
                     "wellbeing": ("WEMWBS", "total"), "mindfulness": ("MAAS", "total")},
             "snake", (1, 0, 2), {_F: 1, _M: 0, _O: 2}, {_S: 1, _T: 2}, -99, (1, 12, 52), True),
    Profile("xlsx", {"distress": ("GHQ-12", "items"), "anxiety": ("GAD-7", "total"), "depression": ("PHQ-9", "total"),
                      "wellbeing": ("SWEMWBS", "total"), "mindfulness": ("FFMQ-15", "total")},
             "snake", ("MBSR", "waiting list", "stress management"), {_F: "F", _M: "M", _O: "X"},
             {_S: "school", _T: "university"}, -99, (0, 10, 52), False),
    Profile("parquet", {"distress": ("DASS21", "total"), "anxiety": ("GAD-7", "total"),
                         "depression": ("PHQ-9", "total"), "wellbeing": ("SWEMWBS", "total"),
                         "mindfulness": ("MAAS", "items")},
             "upper", ("MBI", "no intervention", "active control"), {_F: "female", _M: "male", _O: "other"},
             {_S: "secondary_or_less", _T: "tertiary"}, -99, (0, 24, 48), True),
    Profile("csv", {"distress": ("CORE-10", "total"), "anxiety": ("GAD-7", "total"), "depression": ("PHQ-9", "total"),
                     "wellbeing": ("WEMWBS", "total"), "mindfulness": ("FFMQ-15", "total")},
             "snake", ("MBCT", "TAU", "group CBT"), {_F: 2, _M: 1, _O: 9}, {_S: 1, _T: 2}, 999, (0, 12, 52), True),
    Profile("sav", {"distress": ("K10", "total"), "anxiety": ("DASS21-A", "items"),
                     "depression": ("DASS21-D", "items"), "wellbeing": ("WEMWBS", "total"),
                     "mindfulness": ("FFMQ-15", "total")},
             "upper", (1, 2, 3), {_F: 1, _M: 2, _O: 3}, {_S: 1, _T: 2}, None, (0, 6, 30), True),
)
SPSS_ARM_NAMES = ("Mindfulness programme", "Wait-list control", "Active control")
