"""Loaders for the shared public reference datasets (``../shared/data``): each returns an IPD table the runner
accepts (`check_ipd` contract), the outcome and covariates to use, and the true effects where the data has them.

Why loaders rather than harmonisation specs: these are not MBI trials and have no instruments to score; what they
need is a handful of design decisions (what is a "trial", which rows are controls, which outcome, which baseline
covariates), and those are written down here, one function per dataset, next to the reason for each.

Conventions shared by every loader:

* **Deterministic**: no randomness except where stated (NSLM school blocks use a fixed seed); the same file gives
  the same table, row order included.
* **ITT**: no row is dropped for a missing outcome or covariate; missing is NaN and the runner counts it.
* **Outcome names** follow the data model's ``{construct}_{window}`` pattern with window ``post`` (measured after the
  intervention): the runner accepts any numeric column, but the pattern makes `check_ipd` check the outcome is
  numeric. The runner reads an unknown construct as "higher is worse" (used only for the sign of RATE); every
  outcome here reads "higher is better", see ``ExternalDataset.higher_is_better``.
* **Covariates** are snake_case and baseline (measured before treatment); the ones the data model names
  (``age``, ``gender``, ``education``) use its levels.

The folder is ``$MBI_SHARED_DATA`` if set, else ``<repo>/../shared/data`` (CI checks the shared folder out beside
the clone). Nothing is copied into the repository.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mbi_predict.data.schema import check_ipd
from mbi_predict.errors import DataError

ENV_VAR = "MBI_SHARED_DATA"
IHDP_REPLICATIONS = tuple(range(1, 11))
IHDP_COVARIATES = tuple(f"x{i}" for i in range(1, 26))


@dataclass(frozen=True)
class ExternalDataset:
    """One loaded reference dataset, ready for ``run_experiment``.

    ``ipd``: the IPD table (checked). ``outcome``/``covariates``: what a study config should use.
    ``truth``: per participant (``trial_id``, ``participant_id``, ``cate_true`` and more) where the data is
    semi-synthetic, else None. ``propensity``: ``known`` (randomised) or ``estimated`` (observational), to pass to
    the effect models as ``params: {propensity: ...}``. ``scheme``: the validation the design allows.
    """

    name: str
    ipd: pd.DataFrame
    outcome: str
    covariates: tuple[str, ...]
    propensity: str
    scheme: str
    higher_is_better: bool
    notes: str
    truth: pd.DataFrame | None = None
    outcomes: tuple[str, ...] = field(default=())
    source: Path | None = None

    def summary(self) -> dict:
        ipd = self.ipd
        return {"name": self.name, "n": int(len(ipd)), "n_trials": int(ipd["trial_id"].nunique()),
                "n_mbi": int((ipd["arm"] == 1).sum()), "outcome": self.outcome,
                "n_missing_outcome": int(ipd[self.outcome].isna().sum()), "covariates": list(self.covariates),
                "propensity": self.propensity, "scheme": self.scheme}


def shared_data_dir() -> Path:
    """``$MBI_SHARED_DATA`` or ``<repo root>/../shared/data`` (which may not exist: callers check)."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser().resolve()
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


def dataset_path(folder: str, filename: str, root: str | Path | None = None) -> Path:
    """The path of one shared file; a `DataError` naming the folder and the env var when it is absent."""
    base = Path(root) if root is not None else shared_data_dir()
    path = base / folder / filename
    if not path.is_file():
        raise DataError(f"shared reference data not found (set {ENV_VAR} to the shared data folder)",
                        file=str(path))
    return path


def _yes_no(values: pd.Series) -> pd.Series:
    """'Yes'/'Y'/'No'/'N' with OPT's space padding -> 1.0/0.0, blank or '.' -> NaN."""
    text = values.astype("string").str.strip().str.upper()
    return text.map({"YES": 1.0, "Y": 1.0, "NO": 0.0, "N": 0.0}).astype(float)


def _finish(frame: pd.DataFrame, source: Path,
            ranges: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """The table checked against the IPD contract; `ranges` declares plausible ranges this population needs (kept
    in the table's attrs, so `write_table`'s parquet carries them to `load_ipd`)."""
    frame["control_type"] = frame["control_type"].where(frame["arm"] == 0, None)
    return check_ipd(frame.reset_index(drop=True), source=str(source), ranges=ranges)


# --------------------------------------------------------------------------------------------------- IHDP

def load_ihdp(replication: int = 1, *, root: str | Path | None = None) -> ExternalDataset:
    """IHDP semi-synthetic benchmark (Hill 2011, response surface B; CEVAE's 10 replications), one replication.

    * One site: ``trial_id`` = ``ihdp`` for all 747 children; ``participant_id`` = ``ihdp_001`` ... (file row order,
      identical units and covariates in every replication, so ids match across replications).
    * ``arm`` = treatment (139 treated). Controls are ``passive`` (no home visits / childcare programme).
    * Not randomised as analysed: Hill removed a non-random subset of the treated (non-white mothers), so the
      treated are a biased subset -> ``propensity="estimated"`` and K-fold (internal) validation.
    * Covariates x1..x25 as in the file, except x14, coded {1, 2}, shifted to {0, 1} as CEVAE does.
    * Outcome ``outcome_post`` = y_factual (simulated, higher = better, as for the cognitive test it mimics).
    * ``truth``: mu0, mu1, ``cate_true`` = mu1 - mu0 (noiseless; also as ``true_effect_passive_outcome_post``, the
      runner's name for a simulator's truth), y_cfactual.
    """
    if replication not in IHDP_REPLICATIONS:
        raise DataError(f"IHDP replication must be one of 1..10, got {replication!r}")
    path = dataset_path("ihdp_cevae", f"ihdp_npci_{replication}.csv", root)
    raw = pd.read_csv(path, header=None)
    if raw.shape[1] != 30:
        raise DataError(f"expected 30 columns (treatment, y_factual, y_cfactual, mu0, mu1, x1..x25), found "
                        f"{raw.shape[1]}", file=str(path))
    raw.columns = ["treatment", "y_factual", "y_cfactual", "mu0", "mu1", *IHDP_COVARIATES]
    ids = [f"ihdp_{i + 1:03d}" for i in range(len(raw))]
    frame = pd.DataFrame({"trial_id": "ihdp", "participant_id": ids, "arm": raw["treatment"].astype(int),
                          "control_type": "passive"})
    covariates = raw[list(IHDP_COVARIATES)].astype(float).copy()
    covariates["x14"] = covariates["x14"] - 1.0
    frame = pd.concat([frame, covariates], axis=1)
    frame["outcome_post"] = raw["y_factual"].astype(float)
    truth = pd.DataFrame({"trial_id": "ihdp", "participant_id": ids, "mu0": raw["mu0"], "mu1": raw["mu1"],
                          "cate_true": raw["mu1"] - raw["mu0"], "y_cfactual": raw["y_cfactual"],
                          "arm": raw["treatment"].astype(int)})
    # the runner's simulator-truth naming (true_effect_{control_type}_{outcome}), so the table can serve as one
    truth["true_effect_passive_outcome_post"] = truth["cate_true"]
    return ExternalDataset(
        name=f"ihdp_{replication}", ipd=_finish(frame, path), outcome="outcome_post", covariates=IHDP_COVARIATES,
        propensity="estimated", scheme="kfold", higher_is_better=True, truth=truth, outcomes=("outcome_post",),
        source=path,
        notes="single non-clustered, non-randomised (confounded) sample; K-fold cross-fitting, estimated propensity")


# ------------------------------------------------------------------------------------------- Learning Mindsets

NSLM_COVARIATES = ("student_expectations", "student_race", "student_gender", "first_generation",
                   "school_urbanicity", "school_mindset", "school_achievement", "school_minority", "school_poverty",
                   "school_size")


def nslm_school_blocks(school_ids: pd.Series, n_blocks: int, seed: int = 2018) -> pd.Series:
    """Assign whole schools to ``n_blocks`` blocks of similar size: schools in a seeded random order, each to the
    currently smallest block (deterministic; ties go to the lowest block number)."""
    sizes = school_ids.value_counts()
    order = np.random.default_rng(seed).permutation(np.sort(sizes.index.to_numpy()))
    totals = np.zeros(n_blocks)
    block_of = {}
    for school in order:
        k = int(np.argmin(totals))
        block_of[school] = k
        totals[k] += sizes[school]
    return school_ids.map(block_of)


def load_nslm(*, school_blocks: int | None = 10, root: str | Path | None = None) -> ExternalDataset:
    """National Study of Learning Mindsets, synthetic ACIC 2018 version (10,391 students, 76 schools).

    * ``arm`` = Z (growth-mindset intervention); controls ``passive``. Observational as released (propensity depends
      on covariates, notably S3) -> ``propensity="estimated"``.
    * Clusters: ``school_id`` (1..76) is kept as a column. ``trial_id`` is the unit held out:
      with ``school_blocks=K`` (default 10) whole schools are grouped into K blocks of similar size
      (`nslm_school_blocks`), so leave-one-trial-out over ``trial_id`` is grouped K-fold over schools (the runner
      has no grouped K-fold; 76 single-school folds would be slow and the smallest schools have 4 treated
      students, too few for per-school benefit metrics). ``school_blocks=None``: ``trial_id`` = the school.
    * Covariates: S3 (``student_expectations``, 1..7), C1 (``student_race``, 15 codes, categorical), C2
      (``student_gender``, coded 1/2 with unpublished labels -> categorical ``code_1``/``code_2``, not the data
      model's ``gender``), C3 (``first_generation``), XC (``school_urbanicity``, categorical), X1..X5 (school
      mindset, achievement, minority share, poverty, size; standardised, constant within school).
    * Outcome ``achievement_post`` = Y (simulated achievement, higher = better). No true CATE is published.
    * Usage note of the ACIC organisers: evaluate treatment-effect methods only; do not analyse the covariates.
    """
    path = dataset_path("nslm_acic18", "synthetic_data.csv", root)
    raw = pd.read_csv(path)  # pandas skips the blank lines the CR CR LF endings make (see SOURCE.txt)
    if len(raw) != 10391:
        raise DataError(f"expected 10,391 students, found {len(raw)}", file=str(path))
    school = raw["schoolid"].astype(int)
    if school_blocks is None:
        trial = school.map(lambda s: f"school_{s:02d}")
    else:
        if not 2 <= school_blocks <= school.nunique():
            raise DataError(f"school_blocks must be between 2 and {school.nunique()}, got {school_blocks}")
        trial = nslm_school_blocks(school, school_blocks).map(lambda k: f"schools_{k + 1:02d}")
    within = raw.groupby("schoolid").cumcount() + 1
    frame = pd.DataFrame({
        "trial_id": trial, "participant_id": [f"s{s:02d}_{i:03d}" for s, i in zip(school, within)],
        "arm": raw["Z"].astype(int), "control_type": "passive", "school_id": school.map(lambda s: f"{s:02d}"),
        "student_expectations": raw["S3"].astype(float),
        "student_race": raw["C1"].map(lambda v: f"code_{int(v)}"),
        "student_gender": raw["C2"].map(lambda v: f"code_{int(v)}"),
        "first_generation": raw["C3"].astype(float),
        "school_urbanicity": raw["XC"].map(lambda v: f"code_{int(v)}"),
        "school_mindset": raw["X1"], "school_achievement": raw["X2"], "school_minority": raw["X3"],
        "school_poverty": raw["X4"], "school_size": raw["X5"],
        "achievement_post": raw["Y"].astype(float),
    })
    blocks = "whole schools in {} blocks".format(school_blocks) if school_blocks else "one school per trial_id"
    return ExternalDataset(
        name="learning_mindsets", ipd=_finish(frame, path), outcome="achievement_post", covariates=NSLM_COVARIATES,
        propensity="estimated", scheme="loto", higher_is_better=True, outcomes=("achievement_post",), source=path,
        notes=f"clustered observational data; trial_id = {blocks}; estimated propensity")


# --------------------------------------------------------------------------------------------------- OPT

OPT_COVARIATES = ("age", "education", "black", "white", "hispanic", "public_assistance", "hypertension",
                  "diabetes", "bmi", "tobacco", "previous_pregnancy", "n_previous_pregnancies", "n_living_children",
                  "bl_probing_depth", "bl_attachment_loss", "bl_bleeding_on_probing", "bl_gingival_index")
OPT_OUTCOMES = {"birthweight": "birthweight_post", "gestational_age": "gestational_age_post",
                "preterm": "preterm_post"}


def load_opt(outcome: str = "birthweight", *, root: str | Path | None = None) -> ExternalDataset:
    """OPT trial (Michalowicz et al. 2006): periodontal treatment before 21 weeks vs after delivery, 823 women,
    4 clinics -> leave-one-clinic-out, known propensity (randomised, ~1:1 within clinic).

    * ``trial_id`` = Clinic (KY, MN, MS, NY); ``participant_id`` = PID; ``arm`` = 1 for Group T. Control women were
      treated after delivery, i.e. untreated during pregnancy: ``passive`` (a delayed-treatment control).
    * Outcomes (all three are in the table; ``outcome`` picks the study's): ``birthweight_post`` (g; 14 missing:
      lost to follow-up; non-live births keep their recorded weight), ``gestational_age_post`` (days at the end of
      pregnancy, complete), ``preterm_post`` (pregnancy ended < 37 weeks, 0/1, 9 missing). Higher birthweight and
      gestational age are better.
    * Baseline covariates: age, education (< 8 and 8-12 years -> ``secondary_or_less``, > 12 years ->
      ``tertiary``), race/ethnicity indicators (Hispanic blank -> NaN), public assistance, hypertension, diabetes,
      BMI, tobacco use, previous pregnancy, numbers of previous pregnancies and living children (blank when there
      was no previous pregnancy -> 0 then, else NaN), and baseline periodontal measures (mean probing depth, mean
      clinical attachment loss, % sites bleeding on probing, gingival index). Visit 3/5 and biomarker columns are
      post-baseline and not used.
    """
    if outcome not in OPT_OUTCOMES:
        raise DataError(f"OPT outcome must be one of {', '.join(OPT_OUTCOMES)}, got {outcome!r}")
    path = dataset_path("opt_multisite", "opt.csv", root)
    raw = pd.read_csv(path, na_values=[".", ""], keep_default_na=True)
    clinic = raw["Clinic"].astype(str).str.strip()
    group = raw["Group"].astype(str).str.strip()
    if not set(group) <= {"T", "C"}:
        raise DataError(f"unexpected Group values {sorted(set(group))}", file=str(path))
    education = raw["Education"].astype("string").str.strip().map(
        {"LT 8 yrs": "secondary_or_less", "8-12 yrs": "secondary_or_less", "MT 12 yrs": "tertiary"})
    previous = _yes_no(raw["Prev.preg"])
    n_prev = pd.to_numeric(raw["N.prev.preg"], errors="coerce").where(previous != 0, 0.0)
    n_kids = pd.to_numeric(raw["N.living.kids"], errors="coerce").where(previous != 0, 0.0)
    preterm = _yes_no(raw["Preg.ended...37.wk"])
    frame = pd.DataFrame({
        "trial_id": clinic, "participant_id": raw["PID"].astype(str), "arm": (group == "T").astype(int),
        "control_type": "passive",
        "age": pd.to_numeric(raw["Age"], errors="coerce"), "education": education.astype(object),
        "black": _yes_no(raw["Black"]), "white": _yes_no(raw["White"]), "hispanic": _yes_no(raw["Hisp"]),
        "public_assistance": _yes_no(raw["Public.Asstce"]), "hypertension": _yes_no(raw["Hypertension"]),
        "diabetes": _yes_no(raw["Diabetes"]), "bmi": pd.to_numeric(raw["BMI"], errors="coerce"),
        "tobacco": _yes_no(raw["Use.Tob"]), "previous_pregnancy": previous,
        "n_previous_pregnancies": n_prev, "n_living_children": n_kids,
        "bl_probing_depth": pd.to_numeric(raw["BL.PD.avg"], errors="coerce"),
        "bl_attachment_loss": pd.to_numeric(raw["BL.CAL.avg"], errors="coerce"),
        "bl_bleeding_on_probing": pd.to_numeric(raw["BL..BOP"], errors="coerce"),
        "bl_gingival_index": pd.to_numeric(raw["BL.GE"], errors="coerce"),
        "birthweight_post": pd.to_numeric(raw["Birthweight"], errors="coerce"),
        "gestational_age_post": pd.to_numeric(raw["GA.at.outcome"], errors="coerce"),
        "preterm_post": preterm,
    })
    frame["education"] = frame["education"].where(frame["education"].notna(), None)
    return ExternalDataset(
        name="opt_multisite", ipd=_finish(frame, path), outcome=OPT_OUTCOMES[outcome], covariates=OPT_COVARIATES,
        propensity="known", scheme="loto", higher_is_better=outcome != "preterm",
        outcomes=tuple(OPT_OUTCOMES.values()), source=path,
        notes="real multi-site RCT: clinics as trials, leave-one-clinic-out, known propensity")


# --------------------------------------------------------------------------------------------------- STAR

STAR_COVARIATES = ("gender", "ethnicity", "age", "free_lunch", "school_urbanicity")
STAR_OUTCOMES = {"math": "math_post", "reading": "reading_post"}
#: Kindergarten pupils: the default plausible age range (adults and adolescents in mindfulness trials) does not fit.
STAR_RANGES = {"age": (3.0, 12.0)}
#: STAR kindergarten started in September 1985; age is measured from the middle of the birth quarter.
_STAR_START = 1985 + 8 / 12


def load_star(outcome: str = "math", *, root: str | Path | None = None) -> ExternalDataset:
    """Tennessee STAR, kindergarten cohort (6,325 pupils who entered STAR in kindergarten, 79 schools).

    * ``trial_id`` = kindergarten school (``schoolidk``): class type was randomised within school, so each school
      is a trial and the randomisation ratio is each school's own -> known propensity per school, which the runner
      computes from ``trial_id`` (grouping schools into blocks would mix ratios, so schools are not grouped).
    * ``arm`` = 1 for a small class (13-17 pupils); controls: ``regular`` -> ``passive``, ``regular+aide`` ->
      ``active`` (a classroom aide is another intervention). ``comparison.control_type: passive`` gives the
      classic small-vs-regular contrast. School 14 has no regular class and drops out of that comparison.
    * Outcomes: ``math_post`` / ``reading_post`` = Stanford Achievement Test scaled scores at the end of
      kindergarten (``mathk``/``readk``; higher = better; missing for pupils not tested).
    * Baseline covariates: ``gender`` (female/male), ``ethnicity`` (cauc, afam, other: asian, hispanic, amindian,
      other pooled, 87 pupils), ``age`` (years on 1 Sept 1985 from the birth quarter), ``free_lunch`` (0/1,
      kindergarten), ``school_urbanicity`` (inner-city/suburban/rural/urban). Teacher characteristics are left out:
      teachers were assigned with the class, so they are part of the treatment, not baseline traits of the pupil.
    * Pupils who entered STAR after kindergarten (``stark`` empty) are not in this table.
    """
    if outcome not in STAR_OUTCOMES:
        raise DataError(f"STAR outcome must be one of {', '.join(STAR_OUTCOMES)}, got {outcome!r}")
    path = dataset_path("star_tennessee", "STAR.csv", root)
    raw = pd.read_csv(path)
    raw = raw.loc[raw["stark"].notna()].reset_index(drop=True)
    classes = raw["stark"].astype(str)
    if not set(classes) <= {"small", "regular", "regular+aide"}:
        raise DataError(f"unexpected class types {sorted(set(classes))}", file=str(path))
    birth = raw["birth"].astype("string").str.extract(r"(?P<year>\d{4}) Q(?P<quarter>[1-4])")
    born = pd.to_numeric(birth["year"]) + (pd.to_numeric(birth["quarter"]) - 1) * 0.25 + 0.125
    ethnicity = raw["ethnicity"].astype(object)
    ethnicity = ethnicity.where(ethnicity.isin(["cauc", "afam"]) | ethnicity.isna(), "other")
    frame = pd.DataFrame({
        "trial_id": raw["schoolidk"].astype(int).map(lambda s: f"school_{s:02d}"),
        "participant_id": raw["rownames"].astype(str), "arm": (classes == "small").astype(int),
        "control_type": classes.map({"regular": "passive", "regular+aide": "active", "small": None}),
        "class_type": classes,
        "gender": raw["gender"].astype(object).where(raw["gender"].notna(), None),
        "ethnicity": ethnicity.astype(object).where(ethnicity.notna(), None),
        "age": (_STAR_START - born).astype(float),
        "free_lunch": raw["lunchk"].map({"free": 1.0, "non-free": 0.0}).astype(float),
        "school_urbanicity": raw["schoolk"].astype(object).where(raw["schoolk"].notna(), None),
        "math_post": pd.to_numeric(raw["mathk"], errors="coerce"),
        "reading_post": pd.to_numeric(raw["readk"], errors="coerce"),
    })
    return ExternalDataset(
        name="star_k", ipd=_finish(frame, path, ranges=STAR_RANGES), outcome=STAR_OUTCOMES[outcome],
        covariates=STAR_COVARIATES,
        propensity="known", scheme="loto", higher_is_better=True, outcomes=tuple(STAR_OUTCOMES.values()),
        source=path, notes="real multi-site randomised experiment: schools as trials, leave-one-school-out")


# ------------------------------------------------------------------------------------------------ Cai 2015

CAI_COVARIATES = ("age", "household_size", "rice_area", "disaster_probability", "male", "default_buy",
                  "risk_averse", "literacy", "pre_takeup_rate")


def load_cai2015(*, root: str | Path | None = None) -> ExternalDataset:
    """Cai, de Janvry & Sadoulet (2015): 1,410 rural households in 44 villages, insurance information sessions.

    * ``trial_id`` = administrative village (44); ``participant_id`` = village + row number within village.
    * ``arm`` = 1 for the intensive session; the control is the simple session, another (lighter) information
      session -> ``active``. The randomised default option (``default_buy``) is kept as a covariate.
    * Outcome ``takeup_post`` = bought insurance (0/1, higher = better for the programme).
    * Covariates: age, household size, rice area 2010, perceived disaster probability, male head, randomised
      default, risk aversion, literacy, village take-up rate before the experiment. Missing cells stay NaN.
    * Some villages have 1-2 households in an arm: use a ``min_trial_size`` or grouped blocks before LOTO.
    """
    path = dataset_path("cai2015_social_insure", "Cai_2015.csv", root)
    raw = pd.read_csv(path)
    village = raw["village"].astype(str)
    within = raw.groupby("village").cumcount() + 1
    frame = pd.DataFrame({
        "trial_id": village, "participant_id": [f"{v}_{i:03d}" for v, i in zip(village, within)],
        "arm": raw["intensive"].astype(int), "control_type": "active", "natural_village": raw["address"].astype(str),
        "age": raw["age"].astype(float), "household_size": raw["agpop"].astype(float),
        "rice_area": raw["ricearea_2010"].astype(float), "disaster_probability": raw["disaster_prob"].astype(float),
        "male": raw["male"].astype(float), "default_buy": raw["default"].astype(float),
        "risk_averse": raw["risk_averse"].astype(float), "literacy": raw["literacy"].astype(float),
        "pre_takeup_rate": raw["pre_takeup_rate"].astype(float),
        "takeup_post": raw["takeup_survey"].astype(float),
    })
    return ExternalDataset(
        name="cai2015", ipd=_finish(frame, path), outcome="takeup_post", covariates=CAI_COVARIATES,
        propensity="known", scheme="loto", higher_is_better=True, outcomes=("takeup_post",), source=path,
        notes="clustered field experiment: villages as trials; control is an active (simple) session")


LOADERS = {"ihdp": load_ihdp, "learning_mindsets": load_nslm, "opt_multisite": load_opt, "star": load_star,
           "cai2015": load_cai2015}


def write_table(dataset: ExternalDataset, path: str | Path) -> Path:
    """Write the IPD table as parquet (for ``run_experiment(data=...)``, which reads a table from a path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.ipd.to_parquet(path, index=False)
    return path
