"""Classical (two-stage) meta-analysis: random-effects pooling, IPD effects, interactions, bias checks, plots.

``write_meta_plots`` (`meta.plots`, forest and funnel plots of a `MetaReport`) is imported on first use, so that
importing the statistics (``validate`` pools with `meta.pool` in every worker) does not load matplotlib.
"""

from typing import Any

from mbi_predict.meta.bias import EggerResult, egger_test, leave_one_out
from mbi_predict.meta.interactions import interactions
from mbi_predict.meta.ipd import TwoStageResult, rubin, two_stage
from mbi_predict.meta.pool import MetaRegressionResult, PoolResult, meta_regression, pool
from mbi_predict.meta.report import MetaReport, run_meta

__all__ = ["EggerResult", "MetaRegressionResult", "MetaReport", "PoolResult", "TwoStageResult", "egger_test",
           "interactions", "leave_one_out", "meta_regression", "pool", "rubin", "run_meta", "two_stage",
           "write_meta_plots"]


def __getattr__(name: str) -> Any:
    if name == "write_meta_plots":
        from mbi_predict.meta.plots import write_meta_plots

        return write_meta_plots
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
