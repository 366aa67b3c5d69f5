"""SHAP explanations of prognosis and of differential benefit, their stability across held-out trials, and a
within-trial permutation null that says which covariates really predict who benefits (a family-wise test:
studentised step-down max-T, see ``explain.null``). ``Explanation.to_shap`` gives shap's own object for its plots.

Per leave-one-trial-out fold: ``explain_pipeline`` (prognostic) or ``explain_effect`` (CATE) on the held-out trial's
rows against a background of training rows, then ``fold_importance``; across folds ``stability``; once per model
``permutation_null``; then ``ranking_records`` for summary.json and ``side_by_side`` with the classical interactions.
"""

from mbi_predict.explain.compare import RANKING_KEYS, interaction_variable, ranking_records, side_by_side
from mbi_predict.explain.effect_shap import explain_effect, tlearner_cate_shap
from mbi_predict.explain.explanation import Explanation, as_shap_explanation
from mbi_predict.explain.mapping import column_transformer_map, encoded_to_original
from mbi_predict.explain.null import (NullReference, make_fit_and_explain, null_reference, permutation_null,
                                      permute_within_groups)
from mbi_predict.explain.prognostic import explain_pipeline
from mbi_predict.explain.stability import fold_importance, stability

__all__ = ["Explanation", "NullReference", "RANKING_KEYS", "as_shap_explanation", "column_transformer_map",
           "encoded_to_original", "explain_effect", "explain_pipeline", "fold_importance", "interaction_variable",
           "make_fit_and_explain", "null_reference", "permutation_null", "permute_within_groups", "ranking_records",
           "side_by_side", "stability", "tlearner_cate_shap"]
