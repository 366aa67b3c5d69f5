"""Map SHAP values from encoded model inputs back to the covariates a researcher recorded.

Why sum: SHAP values are additive, so the attribution of an original covariate is exactly the sum of the
attributions of the columns made from it (its one-hot dummies, its missing-indicator, its scaled copy). The sum keeps
the explanation's total (prediction minus base value) unchanged, which is what the additivity checks rely on.

Two ways to know which encoded column came from which covariate:

* ``encoded_to_original(names, original_columns)``: from the names alone (``num__age``, ``cat__gender_male``,
  ``num__missingindicator_baseline_mindfulness``, ``gender[male]``). The longest covariate name that the encoded name
  equals or starts with (followed by ``_``, ``[``, ``=`` or ``.``) wins, so ``age_group_x`` goes to ``age_group``
  rather than ``age``.
* ``column_transformer_map(ct, original_columns)``: from a fitted ``ColumnTransformer``'s structure
  (``output_indices_`` and each block's input columns): a block with one input covariate owns all its outputs
  whatever their names; otherwise names are matched within the block only, and a block whose outputs equal its inputs
  in number with unmatched names is taken as one-to-one. This is the robust path for pipelines.

A transformer that mixes covariates (PCA, splines of several inputs, interactions) cannot be mapped back honestly;
it raises ``MBIError`` naming the column rather than guessing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mbi_predict.errors import MBIError

_SEPARATORS = ("_", "[", "=", ".")
_INDICATOR_PREFIXES = ("missingindicator_",)


def _strip_block_prefix(name: str, block_names: Sequence[str] | None) -> str:
    """Drop a ColumnTransformer's ``block__`` prefix (only when the block is known, or any ``x__`` when unknown)."""
    if "__" not in name:
        return name
    head, tail = name.split("__", 1)
    if block_names is None or head in block_names:
        return tail
    return name


def _match(name: str, candidates: Sequence[str]) -> str | None:
    """The covariate that an encoded column name belongs to, or None."""
    for prefix in _INDICATOR_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):] in candidates:
            return name[len(prefix):]
    if name in candidates:
        return name
    best = None
    for column in candidates:
        if any(name.startswith(column + sep) for sep in _SEPARATORS):
            if best is None or len(column) > len(best):
                best = column
    return best


def encoded_to_original(feature_names_out: Sequence[str], original_columns: Sequence[str]) -> list[str]:
    """For each encoded column name, the original covariate it was made from (by name; see module docstring).

    Raises ``MBIError`` naming the first encoded column that matches no original covariate.
    """
    originals = [str(c) for c in original_columns]
    result = []
    for raw in feature_names_out:
        raw = str(raw)
        found = _match(raw, originals)
        if found is None:
            found = _match(_strip_block_prefix(raw, None), originals)
        if found is None:
            raise MBIError(f"cannot tell which covariate the encoded column {raw!r} comes from; "
                           f"known covariates: {originals[:10]}", column=raw)
        result.append(found)
    return result


def _block_input_columns(ct, name: str, columns, original_columns: Sequence[str]) -> list[str]:
    names_in = getattr(ct, "feature_names_in_", None)
    names_in = list(names_in) if names_in is not None else list(original_columns)
    if isinstance(columns, str):
        return [columns]
    if callable(columns) or isinstance(columns, slice):
        # sklearn resolves these at fit time; the resolved indices live only in a private attribute
        indices = getattr(ct, "_transformer_to_input_indices", {}).get(name)
        if indices is None:
            raise MBIError(f"cannot resolve the input columns of ColumnTransformer block {name!r}")
        return [str(names_in[i]) for i in indices]
    cols = list(np.atleast_1d(columns))
    if cols and isinstance(cols[0], (bool, np.bool_)):
        return [str(n) for n, keep in zip(names_in, cols) if keep]
    if cols and isinstance(cols[0], (int, np.integer)):
        return [str(names_in[i]) for i in cols]
    return [str(c) for c in cols]


def column_transformer_map(ct, original_columns: Sequence[str]) -> list[str]:
    """For each output column of a fitted ``ColumnTransformer``, the original covariate it came from."""
    names_out = [str(n) for n in ct.get_feature_names_out()]
    owner: list[str | None] = [None] * len(names_out)
    block_names = [b for b, *_ in ct.transformers_]
    for block, transformer, columns in ct.transformers_:
        out = ct.output_indices_.get(block, slice(0, 0))
        positions = range(*out.indices(len(names_out)))
        if transformer == "drop" or len(positions) == 0:
            continue
        inputs = _block_input_columns(ct, block, columns, original_columns)
        if len(inputs) == 1:
            for pos in positions:
                owner[pos] = inputs[0]
            continue
        matched = [_match(_strip_block_prefix(names_out[pos], block_names), inputs) for pos in positions]
        if any(m is None for m in matched):
            if len(positions) != len(inputs):
                bad = names_out[positions[matched.index(None)]]
                raise MBIError(f"ColumnTransformer block {block!r} mixes covariates {inputs[:5]}; SHAP values of "
                               f"its outputs cannot be mapped back to one covariate each", column=bad)
            matched = list(inputs)  # one-to-one block whose output names were renamed
        for pos, m in zip(positions, matched):
            owner[pos] = m
    missing = [names_out[i] for i, o in enumerate(owner) if o is None]
    if missing:
        raise MBIError("encoded columns not produced by any ColumnTransformer block", column=missing[0])
    return owner  # type: ignore[return-value]


def aggregate(values: np.ndarray, owners: Sequence[str], original_order: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Sum the columns of ``values`` (n x encoded) by owner; returns (n x used originals, their names in order)."""
    values = np.asarray(values, dtype=float)
    owner_set = set(owners)
    used = [c for c in original_order if c in owner_set]
    used += [c for c in dict.fromkeys(owners) if c not in set(used)]
    index = {c: j for j, c in enumerate(used)}
    out = np.zeros((values.shape[0], len(used)))
    for k, owner in enumerate(owners):
        out[:, index[owner]] += values[:, k]
    return out, used
