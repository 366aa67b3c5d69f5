"""Classical (two-stage) meta-analysis: random-effects pooling, IPD effects, interactions, bias checks, plots."""

from mbi_predict.meta.bias import EggerResult, egger_test, leave_one_out
from mbi_predict.meta.interactions import interactions
from mbi_predict.meta.ipd import TwoStageResult, rubin, two_stage
from mbi_predict.meta.pool import MetaRegressionResult, PoolResult, meta_regression, pool
from mbi_predict.meta.report import MetaReport, run_meta, write_plots

__all__ = ["EggerResult", "MetaRegressionResult", "MetaReport", "PoolResult", "TwoStageResult", "egger_test",
           "interactions", "leave_one_out", "meta_regression", "pool", "rubin", "run_meta", "two_stage",
           "write_plots"]
