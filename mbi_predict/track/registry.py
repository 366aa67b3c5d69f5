"""The Model Registry: a logged final model registered as a version, with its model card as the description and an
alias (``candidate`` by default) a deployment can point at (``models:/<name>@candidate``).

A registered model holds ONE kind of model: its tag ``mbi_predict.model_kind`` is set on creation, and registering
an effect model under a name that holds prognostic ones (or the reverse) is refused with one line, before anything
is written: a consumer of ``models:/<name>@candidate`` must not silently get CATEs instead of predicted outcomes.
"""

from __future__ import annotations

from typing import Any

from mbi_predict.errors import ConfigError
from mbi_predict.track.mapping import KIND_TAG
from mbi_predict.track.store import check_tracking_uri, client

DEFAULT_ALIAS = "candidate"
_MAX_DESCRIPTION = 60000


def _logged_model(made, model_uri: str) -> Any:
    """The LoggedModel of a ``models:/<model id>`` URI (None for other URIs)."""
    if not model_uri.startswith("models:/"):
        return None
    model_id = model_uri.removeprefix("models:/").split("/")[0]
    if not model_id.startswith("m-"):
        return None
    try:
        logged = made.get_logged_model(model_id)
    except Exception:
        raise ConfigError(f"no logged model {model_uri} in the tracking store") from None
    return logged


def register_model(model_uri: str, name: str, *, description: str | None = None, kind: str | None = None,
                   alias: str | None = DEFAULT_ALIAS, tracking_uri: str | None = None,
                   registry_uri: str | None = None, tags: dict[str, str] | None = None):
    """Register ``model_uri`` (a ``models:/<model id>`` or ``runs:/`` URI of a final model) as a new version of
    registered model ``name``, with ``description`` (the model card's markdown) and ``alias``; returns the
    ``ModelVersion``. ``kind`` (prognostic/effect) defaults to the logged model's ``mbi_predict.model_kind`` tag.
    A name that already holds a model of another kind -> ConfigError (one line), nothing registered."""
    uri = check_tracking_uri(tracking_uri, registry=True)
    made = client(uri, registry_uri)
    logged = _logged_model(made, model_uri)
    logged_kind = logged.tags.get(KIND_TAG) if logged is not None else None
    # the version's source is the model's artifact location: resolving ``models:/`` later would go through
    # MLflow's GLOBAL tracking URI, which this library leaves alone
    source, model_id, run_id = ((logged.artifact_location, logged.model_id, logged.source_run_id)
                                if logged is not None else (model_uri, None, None))
    kind = kind or logged_kind
    if kind not in ("prognostic", "effect"):
        raise ConfigError(f"cannot tell the kind of {model_uri} (prognostic or effect): pass kind=")
    if logged_kind is not None and logged_kind != kind:
        raise ConfigError(f"{model_uri} is a {logged_kind} model, not {kind}")
    existing = _registered(made, name)
    if existing is not None:
        held = existing.tags.get(KIND_TAG)
        if held is not None and held != kind:
            raise ConfigError(f"registered model {name!r} holds {held} models; a {kind} model cannot be registered "
                              f"under it: choose another name")
    else:
        try:
            made.create_registered_model(name, tags={KIND_TAG: kind})
        except Exception as exc:  # created by another process a moment ago: re-read and re-check
            existing = _registered(made, name)
            if existing is None:
                raise ConfigError(f"cannot register model {name!r}: {' '.join(str(exc).split())[:200]}") from None
            if existing.tags.get(KIND_TAG) not in (None, kind):
                raise ConfigError(f"registered model {name!r} holds {existing.tags[KIND_TAG]} models; a {kind} "
                                  f"model cannot be registered under it: choose another name") from None
        if existing is None and description:
            made.update_registered_model(name, description=description[:_MAX_DESCRIPTION])
    if existing is not None and KIND_TAG not in existing.tags:
        made.set_registered_model_tag(name, KIND_TAG, kind)
    version = made.create_model_version(name, source=source, run_id=run_id, model_id=model_id,
                                        tags={KIND_TAG: kind, **(tags or {})},
                                        description=(description or "")[:_MAX_DESCRIPTION] or None)
    if alias:
        made.set_registered_model_alias(name, alias, version.version)
    return made.get_model_version(name, version.version)


def _registered(made, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return made.get_registered_model(name)
    except MlflowException:
        return None
