"""Fixtures shared by the model tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def recorded_folds(monkeypatch):
    """Every trial-grouped split `_effect_common.fit_weighted` makes, as (folds, the groups split): a fitted model
    does not keep its folds, so the tests see them where they are made."""
    from mbi_predict.models import _effect_common

    splits: list[tuple[list, np.ndarray]] = []

    class Recording(_effect_common.GroupKFold):
        def split(self, X, y=None, groups=None):
            folds = list(super().split(X, y, groups))
            splits.append((folds, np.asarray(groups)))
            return iter(folds)

    monkeypatch.setattr(_effect_common, "GroupKFold", Recording)
    return splits
