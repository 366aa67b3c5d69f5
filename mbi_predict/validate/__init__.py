"""Validation: leave-one-trial-out metrics (``benefit`` for predicted treatment benefit) and the
pre-declared heterogeneity verdict (``heterogeneity``)."""
