"""The preprocessing half of every model pipeline: imputation, scaling and one-hot encoding as one ColumnTransformer.

Why a ColumnTransformer inside the model's Pipeline rather than a preprocessing pass over the table: in
leave-one-trial-out validation the whole Pipeline is cloned per fold, so the imputer's means, the scaler's SDs and the
encoder's categories are learnt from the training trials only. A separate pass would let the held-out trial leak
into them.

Numeric covariates: impute (mean, or sklearn's IterativeImputer), with missing-indicator columns (missingness in
trials is informative: a trial that did not measure mindfulness is a different trial), then standardise.
Categorical covariates: missing becomes its own level, then one-hot with unknown levels ignored (a held-out trial
may bring a country the training trials never had).
The arm (0/1) passes through unchanged when the model uses it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (registers IterativeImputer)
from sklearn.impute import IterativeImputer, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mbi_predict.errors import ConfigError

ARM = "arm"


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns of the model frame are numeric or categorical covariates, and the outcome's own baseline."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    outcome_baseline: str | None = None
    arm: str = ARM
    all_columns: tuple[str, ...] = field(default=())

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, covariates: list[str], outcome_baseline: str | None) -> FeatureSpec:
        numeric = tuple(c for c in covariates if pd.api.types.is_numeric_dtype(frame[c]))
        categorical = tuple(c for c in covariates if c not in numeric)
        return cls(numeric, categorical, outcome_baseline, ARM, tuple(covariates))

    def restricted_to(self, columns: list[str]) -> FeatureSpec:
        return FeatureSpec(tuple(c for c in self.numeric if c in columns),
                           tuple(c for c in self.categorical if c in columns), self.outcome_baseline, self.arm,
                           tuple(c for c in self.all_columns if c in columns))


def make_imputer(kind: str, seed: int):
    if kind == "simple":
        return SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True)
    if kind == "iterative":
        # sample_posterior=False: one deterministic fill per fold (multiple imputation belongs to the classical
        # analysis in mbi_predict.data.impute, not to a prediction pipeline)
        return IterativeImputer(max_iter=10, random_state=seed, add_indicator=True, keep_empty_features=True)
    raise ConfigError(f"unknown imputer {kind!r}; use simple or iterative")


def make_preprocessor(features: FeatureSpec, *, use_arm: bool, imputer: str = "simple",
                      seed: int = 0) -> ColumnTransformer:
    """The fold-fitted feature transformer; the output is a dense float matrix with readable feature names."""
    transformers = []
    if features.numeric:
        numeric = Pipeline([("impute", make_imputer(imputer, seed)), ("scale", StandardScaler())])
        transformers.append(("num", numeric, list(features.numeric)))
    if features.categorical:
        categorical = Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value="missing", keep_empty_features=True)),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ])
        transformers.append(("cat", categorical, list(features.categorical)))
    if use_arm:
        transformers.append(("arm", "passthrough", [features.arm]))
    if not transformers:
        raise ConfigError("the model has no features: give covariates or use the arm")
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=True)


def categorical_as_object(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Categorical covariates as object columns with NaN for missing.

    pandas 3 stores text as its `str` dtype with its own missing marker; sklearn's imputers and encoders behave
    most predictably on plain object arrays, so the conversion is done once, on load.
    """
    out = frame.copy()
    for column in columns:
        values = out[column].astype("object")
        out[column] = values.where(values.notna(), float("nan"))
    return out
