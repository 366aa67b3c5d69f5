"""Compatibility: subgroup performance (`subgroup_metrics`) is computed by the folds stage, so it now lives in
the validate layer, `mbi_predict.validate.subgroup_performance`; this module keeps the old import path."""

from mbi_predict.validate.subgroup_performance import (AGE_BANDS, CATEGORICAL_SUBGROUPS, MIN_SUBGROUP_N,
                                                       TERTILE_SUBGROUPS, subgroup_metrics)

__all__ = ["AGE_BANDS", "CATEGORICAL_SUBGROUPS", "MIN_SUBGROUP_N", "TERTILE_SUBGROUPS", "subgroup_metrics"]
