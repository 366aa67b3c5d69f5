"""A simulated consortium of MBI trials whose truth is known.

The latent model lives on the standardised scale of DATA_MODEL.md (SD units, oriented so the construct's name reads
upwards). Per trial j and participant i, for construct c and follow-up window w:

    baseline_c  ~ trial mean + correlated normal deviations (SD 1 within trial)
    y_c,w       = a_j,c,w + rho * baseline_c + arm * tau_i,c,w + e,   e ~ N(0, 1 - rho^2)
    tau_i,c,w   = mean effect(c, w, control type) + u_j + direction_c * modifier_scenario(x_i)

so each participant's true individual effect tau_i,c,w (MBI versus the trial's passive or active control) is known
exactly and written to the truth table. The default scenario follows the published IPD meta-analysis of MBIs
(Galante et al., Nature Mental Health 2023): 13 trials, 2,371 participants, median age ~34, ~71% women, ~20% missing
primary outcome, SMD in distress ~-0.3 at 1-6 months against passive controls, ~0 against active controls in 4 trials,
little between-trial heterogeneity and no clear effect modifiers.

`simulate_latent` returns the latent table; `mbi_predict.data.rawsim` turns it into raw trial files in their own
instruments, codings and formats plus the consortium spec that harmonises them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mbi_predict.errors import MBIError

OUTCOME_CONSTRUCTS = ("distress", "anxiety", "depression", "wellbeing")
# +1: higher is worse, so a benefit is a negative effect; -1: higher is better.
DIRECTION = {"distress": 1.0, "anxiety": 1.0, "depression": 1.0, "wellbeing": -1.0}
# Benefit of the MBI against passive controls in SD units (positive = better), by window.
BENEFIT_VS_PASSIVE = {"post": 0.36, "fu1_6": 0.32, "fu6plus": 0.24}
CONSTRUCT_SCALE = {"distress": 1.0, "anxiety": 0.85, "depression": 0.9, "wellbeing": 0.75}
BENEFIT_VS_ACTIVE = {"post": 0.03, "fu1_6": 0.02, "fu6plus": 0.0}


@dataclass(frozen=True)
class Scenario:
    """Parameters of a simulated consortium; all effects in SD units of the outcome, positive = benefit."""

    name: str
    description: str
    # benefit += modifier_coefs[x] * (x - population centre of x) on every construct, direction-adjusted
    modifier_coefs: dict[str, float] = field(default_factory=dict)
    # a harmed subgroup: participants with baseline_distress above this z-score get `harm_effect` (negative benefit)
    harm_threshold: float | None = None
    harm_effect: float = 0.0
    # or a harmed subgroup defined by several traits: (column, "gt" | "lt", value), all must hold
    harm_conditions: tuple[tuple[str, str, float], ...] = ()
    # extra dropout (logit scale) of harmed participants in the MBI arm: those made worse leave more often
    harm_dropout: float = 0.0
    between_trial_sd: float = 0.05
    rho: float = 0.6
    missing_primary: float = 0.20


SCENARIOS: dict[str, Scenario] = {
    "galante2023": Scenario(
        "galante2023",
        "realistic: SMD ~-0.3 vs passive, ~0 vs active, weak modifiers, little between-trial heterogeneity",
        modifier_coefs={"baseline_distress": 0.04, "baseline_mindfulness": -0.02},
    ),
    "null": Scenario("null", "no heterogeneity of the effect: every participant's effect equals the trial's"),
    "strong": Scenario(
        "strong",
        "clear modifiers: more benefit with higher baseline distress and lower dispositional mindfulness",
        modifier_coefs={"baseline_distress": 0.30, "baseline_mindfulness": -0.20},
    ),
    "modest": Scenario(
        "modest",
        "modest modifiers: half the strong scenario's (more benefit with higher baseline distress and lower "
        "dispositional mindfulness)",
        modifier_coefs={"baseline_distress": 0.15, "baseline_mindfulness": -0.10},
    ),
    "harm_subgroup": Scenario(
        "harm_subgroup",
        "a small harmed subgroup (about 4%): young participants (age < 25) with high baseline distress (z > 1), "
        "so concentrated in the university trials; everyone else benefits as in galante2023; the harmed drop out "
        "of the MBI arm more often",
        harm_conditions=(("age", "lt", 25.0), ("baseline_distress", "gt", 1.0)), harm_effect=-0.5,
        harm_dropout=1.0,
    ),
    "harm": Scenario(
        "harm",
        "a harmed subgroup: participants with very high baseline distress (z > 1) get worse under the MBI",
        harm_threshold=1.0, harm_effect=-0.45,
    ),
    "no_effect_subgroup": Scenario(
        "no_effect_subgroup",
        "the harm scenario's subgroup (baseline distress z > 1) gets no effect at all, neither benefit nor harm; "
        "everyone else benefits: the boundary of the harm test, where harm must not be flagged",
        harm_threshold=1.0, harm_effect=0.0,
    ),
}

_SETTINGS = ("university", "workplace", "community", "health_service")
_COUNTRIES = ("UK", "UK", "UK", "Netherlands", "Spain", "Australia", "Canada", "USA")


@dataclass
class LatentConsortium:
    """The latent (standardised) IPD table, the truth table, the trial designs and the scenario."""

    ipd: pd.DataFrame
    truth: pd.DataFrame
    trials: pd.DataFrame
    scenario: Scenario
    seed: int

    def params(self) -> dict:
        return {"scenario": asdict(self.scenario), "seed": self.seed,
                "n_participants": int(len(self.ipd)), "n_trials": int(self.ipd["trial_id"].nunique())}


def _trial_sizes(rng: np.random.Generator, n_trials: int, n_total: int) -> np.ndarray:
    weights = rng.lognormal(0.0, 0.55, n_trials)
    sizes = np.maximum(40, np.round(weights / weights.sum() * n_total)).astype(int)
    sizes[np.argmax(sizes)] += n_total - sizes.sum()
    if sizes.min() < 30:
        raise MBIError(f"--n {n_total} is too small for {n_trials} trials (need at least 40 per trial)")
    return sizes


def _design(rng: np.random.Generator, n_trials: int, n_total: int) -> pd.DataFrame:
    sizes = _trial_sizes(rng, n_trials, n_total)
    n_active = max(1, round(n_trials * 4 / 13)) if n_trials >= 3 else 0
    active_trials = set(rng.choice(n_trials, size=n_active, replace=False).tolist()) if n_active else set()
    three_arm = set(sorted(active_trials)[: len(active_trials) // 2])
    rows = []
    for j in range(n_trials):
        setting = _SETTINGS[j % len(_SETTINGS)] if j >= len(_SETTINGS) else _SETTINGS[j]
        delivery = "online" if (j % 5 == 3) else ("individual" if j % 11 == 7 else "group_in_person")
        mbi_type = ("MBSR", "MBCT", "other")[j % 3]
        if j in three_arm:
            controls = ("passive", "active")
        elif j in active_trials:
            controls = ("active",)
        else:
            controls = ("passive",)
        rows.append({
            "trial_id": f"T{j + 1:02d}",
            "n": int(sizes[j]),
            "controls": controls,
            "allocation_mbi": 2 / 3 if (j == 1 and len(controls) == 1) else 1 / (1 + len(controls)),
            "mbi_type": mbi_type,
            "n_sessions": int(8 if mbi_type in ("MBSR", "MBCT") else rng.integers(4, 9)),
            "delivery": delivery,
            "setting": setting,
            "country": _COUNTRIES[int(rng.integers(len(_COUNTRIES)))],
            "has_fu6plus": bool(j % 2 == 0),
            "measures_mindfulness": bool(j % 4 != 2),
            "trial_distress_mean": float(rng.normal(0.4 if setting == "health_service" else 0.0, 0.25)),
            "trial_effect_deviation": 0.0,
        })
    return pd.DataFrame(rows)


def _participants(rng: np.random.Generator, trial: pd.Series) -> pd.DataFrame:
    n = int(trial["n"])
    # correlated baseline constructs: distress drives anxiety, depression, (low) wellbeing and (low) mindfulness
    z = rng.standard_normal((n, 5))
    distress = z[:, 0]
    frame = pd.DataFrame({
        "baseline_distress": trial["trial_distress_mean"] + distress,
        "baseline_anxiety": trial["trial_distress_mean"] * 0.7 + 0.70 * distress + np.sqrt(1 - 0.49) * z[:, 1],
        "baseline_depression": trial["trial_distress_mean"] * 0.75 + 0.75 * distress + np.sqrt(1 - 0.5625) * z[:, 2],
        "baseline_wellbeing": -trial["trial_distress_mean"] * 0.6 - 0.60 * distress + 0.8 * z[:, 3],
        "baseline_mindfulness": -0.45 * distress + np.sqrt(1 - 0.2025) * z[:, 4],
    })
    age_centre = 21.0 if trial["setting"] == "university" else 38.0
    age_spread = 3.0 if trial["setting"] == "university" else 11.0
    frame.insert(0, "age", np.clip(np.round(rng.normal(age_centre, age_spread, n)), 18, 80).astype(float))
    female_share = 0.78 if trial["setting"] in ("university", "health_service") else 0.64
    frame.insert(1, "gender", rng.choice(["female", "male", "other"], size=n,
                                         p=[female_share, 0.99 - female_share, 0.01]))
    tertiary = 0.95 if trial["setting"] == "university" else 0.55
    frame.insert(2, "education", rng.choice(["tertiary", "secondary_or_less"], size=n, p=[tertiary, 1 - tertiary]))
    # randomisation: the allocation ratio is fixed by design, the order is random
    n_mbi = int(round(n * trial["allocation_mbi"]))
    controls = trial["controls"]
    n_ctrl = n - n_mbi
    control_labels = [controls[k % len(controls)] for k in range(n_ctrl)]
    assignment = np.array([1] * n_mbi + [0] * n_ctrl)
    ctype = np.array([None] * n_mbi + control_labels, dtype=object)
    order = rng.permutation(n)
    frame.insert(0, "arm", assignment[order])
    frame.insert(1, "control_type", ctype[order])
    return frame


def harmed_subgroup(frame: pd.DataFrame, scenario: Scenario) -> np.ndarray:
    """Who the scenario harms (all False when it harms no one)."""
    harmed = np.zeros(len(frame), dtype=bool)
    if scenario.harm_threshold is not None:
        harmed = frame["baseline_distress"].to_numpy(dtype=float) > scenario.harm_threshold
    if scenario.harm_conditions:
        harmed = np.ones(len(frame), dtype=bool)
        for column, op, value in scenario.harm_conditions:
            x = frame[column].to_numpy(dtype=float)
            harmed &= (x > value) if op == "gt" else (x < value)
    return harmed


def individual_benefit(frame: pd.DataFrame, scenario: Scenario, centres: dict[str, float]) -> np.ndarray:
    """The scenario's person-level deviation of benefit (SD units, positive = benefit) from the trial's mean."""
    benefit = np.zeros(len(frame))
    for column, coef in scenario.modifier_coefs.items():
        x = frame[column].to_numpy(dtype=float)
        benefit += coef * (x - centres[column])
    if scenario.harm_threshold is not None or scenario.harm_conditions:
        benefit = np.where(harmed_subgroup(frame, scenario), scenario.harm_effect, benefit)
    return benefit


def simulate_latent(scenario: str = "galante2023", *, seed: int = 2023, n_trials: int = 13,
                    n: int = 2371) -> LatentConsortium:
    """Draw a consortium on the latent standardised scale, with each participant's true effects.

    Deterministic for a given (scenario, seed, n_trials, n).
    """
    if scenario not in SCENARIOS:
        raise MBIError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if n_trials < 1:
        raise MBIError("--trials must be at least 1")
    spec = SCENARIOS[scenario]
    rng = np.random.default_rng(np.random.SeedSequence([seed, n_trials, n]))
    design = _design(rng, n_trials, n)
    design["trial_effect_deviation"] = rng.normal(0.0, spec.between_trial_sd, n_trials)
    centres = {"baseline_distress": 0.0, "baseline_mindfulness": 0.0, "age": 34.0}

    ipd_parts, truth_parts = [], []
    for _, trial in design.iterrows():
        people = _participants(rng, trial)
        people.insert(0, "trial_id", trial["trial_id"])
        people.insert(1, "participant_id", [f"{trial['trial_id']}-{i + 1:04d}" for i in range(len(people))])
        for trait in ("mbi_type", "n_sessions", "delivery", "setting", "country"):
            people[trait] = trial[trait]
        deviation = individual_benefit(people, spec, centres)
        harmed = harmed_subgroup(people, spec)
        has_harm = spec.harm_threshold is not None or bool(spec.harm_conditions)
        truth = people[["trial_id", "participant_id"]].copy()
        windows = ("post", "fu1_6", "fu6plus") if trial["has_fu6plus"] else ("post", "fu1_6")
        arm = people["arm"].to_numpy()
        ctype = people["control_type"].to_numpy()
        for construct in OUTCOME_CONSTRUCTS:
            base = people[f"baseline_{construct}"].to_numpy(dtype=float)
            sign, scale = DIRECTION[construct], CONSTRUCT_SCALE[construct]
            for window in windows:
                benefit = {}
                for control in ("passive", "active"):
                    mean_benefit = (BENEFIT_VS_PASSIVE if control == "passive" else BENEFIT_VS_ACTIVE)[window]
                    person = scale * (mean_benefit + trial["trial_effect_deviation"]) + deviation
                    if has_harm:
                        person = np.where(harmed, spec.harm_effect, scale * (mean_benefit + trial["trial_effect_deviation"]))
                    benefit[control] = person
                    # the truth is an effect on the outcome as oriented: benefit on distress is a reduction
                    truth[f"true_effect_{control}_{construct}_{window}"] = (
                        -sign * person if control in trial["controls"] else np.nan)
                # under control the expected outcome does not depend on which control (active controls add benefit
                # relative to passive; we model the active arm as passive plus the MBI-vs-active gap)
                active_gain = benefit["passive"] - benefit["active"]
                intercept = float(rng.normal(-0.15 if window != "post" else -0.1, 0.1))
                noise = rng.standard_normal(len(people)) * np.sqrt(1 - spec.rho ** 2)
                y = intercept + spec.rho * base + noise
                y = y - sign * np.where(arm == 1, benefit["passive"], 0.0)
                y = y - sign * np.where((arm == 0) & (ctype == "active"), active_gain, 0.0)
                people[f"{construct}_{window}"] = y
        _add_missingness(rng, people, trial, spec, harmed)
        ipd_parts.append(people)
        truth["harmed_subgroup"] = harmed.astype(int)
        truth_parts.append(truth)
    ipd = pd.concat(ipd_parts, ignore_index=True)
    truth = pd.concat(truth_parts, ignore_index=True)
    ordered = ["trial_id", "participant_id", "arm", "control_type", "age", "gender", "education",
               "baseline_distress", "baseline_anxiety", "baseline_depression", "baseline_wellbeing",
               "baseline_mindfulness"]
    rest = [c for c in ipd.columns if c not in ordered]
    design = design.assign(controls=design["controls"].map(list))
    return LatentConsortium(ipd[ordered + rest], truth, design, spec, seed)


def _add_missingness(rng: np.random.Generator, people: pd.DataFrame, trial: pd.Series, spec: Scenario,
                     harmed: np.ndarray | None = None) -> None:
    """Missing at random: dropout rises with baseline distress and in the MBI arm (as in real trials), and for
    harmed participants in the MBI arm when the scenario says so (a function of traits and arm: still MAR)."""
    n = len(people)
    distress = people["baseline_distress"].to_numpy(dtype=float)
    arm = people["arm"].to_numpy()
    logit = np.log(spec.missing_primary / (1 - spec.missing_primary)) + 0.35 * (distress - distress.mean()) \
        + 0.3 * (arm - 0.5)
    if harmed is not None and spec.harm_dropout:
        logit = logit + spec.harm_dropout * (harmed & (arm == 1))
    dropout_fu = rng.random(n) < 1 / (1 + np.exp(-logit))
    dropout_post = dropout_fu & (rng.random(n) < 0.6)
    for column in people.columns:
        if column.endswith("_post"):
            people.loc[dropout_post, column] = np.nan
        elif column.endswith("_fu1_6"):
            people.loc[dropout_fu, column] = np.nan
        elif column.endswith("_fu6plus"):
            people.loc[dropout_fu | (rng.random(n) < 0.15), column] = np.nan
    if not trial["measures_mindfulness"]:
        people["baseline_mindfulness"] = np.nan
    else:
        people.loc[rng.random(n) < 0.04, "baseline_mindfulness"] = np.nan
    people.loc[rng.random(n) < 0.03, "education"] = None
    people.loc[rng.random(n) < 0.02, "baseline_distress"] = np.nan
