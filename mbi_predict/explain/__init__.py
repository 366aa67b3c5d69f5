"""SHAP explanations of prognosis and of differential benefit, their stability across held-out trials, and a
within-trial permutation null that says which covariates really predict who benefits."""
