"""Models: prognostic models (``prognostic``), treatment-effect (CATE) estimators (``effect``) and
trial-clustered inference for average effects (``inference``)."""
