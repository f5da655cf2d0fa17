"""The registry of sparsity methods: each method states its defaults, checks its settings and builds
its ``Sparsifier``, in the module that implements it.

``resolve_method(config)`` fills the sparsity fields a run leaves unset from its method's defaults
(some are functions of the run's planned length, ``train.epochs``) and refuses settings the method
cannot use; the Trainer records the resolved config, so ``config.yaml`` says exactly what ran.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, create_model

from sparsernn.config import SparsityConfig
from sparsernn.errors import ConfigError
from sparsernn.registry import Registry
from sparsernn.settings import METHOD_SETTINGS, own_fields

if TYPE_CHECKING:
    from sparsernn.config import RunConfig
    from sparsernn.sparsity.base import Sparsifier


@dataclass(frozen=True)
class Method:
    """A sparsity method: ``settings`` is its settings model (a subclass of ``SparsityConfig`` adding the
    method's own fields with their defaults, typed, validated and documented; ``SparsityConfig`` itself
    for a method with none), ``resolve`` checks and derives the rest in place (raising ``ValueError``),
    ``build`` makes its Sparsifier for a resolved config and the number of optimizer steps per epoch.

    ``fields`` (the settings it reads) and ``defaults`` (those not ``None`` when unset) are read off
    ``settings``; a method registered the old way, with ``fields`` and ``defaults`` and no ``settings``,
    gets a settings model made of the built-in methods' declarations of those fields."""

    name: str
    description: str
    build: Callable[[RunConfig, int], Sparsifier]
    fields: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    resolve: Callable[[RunConfig], None] | None = None
    settings: type[SparsityConfig] | None = None

    def __post_init__(self) -> None:
        settings = self.settings or _settings_of(self.name, self.fields, self.defaults)
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "fields", own_fields(settings, SparsityConfig))
        object.__setattr__(self, "defaults", {name: info.get_default(call_default_factory=True)
                                              for name, info in settings.model_fields.items() if name in self.fields
                                              and info.get_default(call_default_factory=True) is not None})


def _settings_of(name: str, fields: Iterable[str], defaults: dict[str, Any]) -> type[SparsityConfig]:
    """A settings model of ``fields`` as the registered methods declare them, with ``defaults``."""
    if not fields:
        return SparsityConfig
    known = {}
    for method in METHODS:
        known = {**method.settings.model_fields, **known}
    missing = [f for f in fields if f not in known]
    if missing:
        raise ValueError(f"method {name}: no registered method declares {', '.join(missing)}; give it settings=")
    declared = {f: (known[f].annotation, Field(defaults.get(f), description=known[f].description)) for f in fields}
    return create_model(f"{name}_settings", __base__=SparsityConfig, **declared)


METHODS: Registry[Method] = Registry("sparsity method")
METHOD_SETTINGS.bind(lambda name: METHODS[name].settings, METHODS.names)  # sparsity.method selects the settings


def resolve_method(config: RunConfig) -> RunConfig:
    """A copy of ``config`` with its sparsity method's defaults filled in and its settings checked, made
    immutable; a problem is a one-line ``ConfigError`` naming the field. A config is resolved once, where
    it enters (CLI, API, search): a resolved one is returned as it is, not copied and resolved again."""
    if config.frozen:
        return config
    resolved = config.model_copy(deep=True)
    sparsity = resolved.sparsity
    try:
        method = METHODS[sparsity.method]
    except ValueError as exc:
        raise ConfigError(f"sparsity.method: {exc}") from None
    if not isinstance(sparsity, method.settings):  # a config made before the method's registration changed
        raise ConfigError(f"sparsity: settings of {type(sparsity).__name__}, not of sparsity.method {method.name}")
    try:
        for name, value in method.defaults.items():
            if getattr(sparsity, name) is None:
                setattr(sparsity, name, value)
        if method.resolve is not None:
            method.resolve(resolved)
    except ValueError as exc:
        raise ConfigError(str(exc).removeprefix("Value error, ")) from None
    return resolved.freeze()


def build_sparsifier(config: RunConfig, steps_per_epoch: int) -> Sparsifier:
    """The Sparsifier of a config (resolved here, so a config straight from YAML works too)."""
    resolved = resolve_method(config)
    return METHODS[resolved.sparsity.method].build(resolved, steps_per_epoch)


def needs_density(config: RunConfig) -> None:
    """Methods with a density target refuse the dense default."""
    if config.sparsity.density == 1.0:
        raise ValueError(f"sparsity.method {config.sparsity.method} needs sparsity.density < 1 (e.g. --density 0.33)")


# ---- settings several methods declare alike ---------------------------------------------------------

def _positive_interval(value: int | str) -> int | str:
    if isinstance(value, int) and value <= 0:
        raise ValueError("must be a positive number of steps or 'epoch'")
    return value


SparseInit = Annotated[Literal["uniform", "er"], Field(description="initial per-matrix densities: uniform | er",
                                                       json_schema_extra={"option": "--sparse-init"})]
UpdateEvery = Annotated[int | Literal["epoch"], AfterValidator(_positive_interval),
                        Field(description="steps between mask updates, or epoch")]


def with_defaults(base: type[SparsityConfig], name: str, **defaults: Any) -> type[SparsityConfig]:
    """``base`` (a settings model) with other defaults: one method's settings among several that share fields."""
    fields = {}
    for field_name, value in defaults.items():
        info = copy.copy(base.model_fields[field_name])
        info.default, info.default_factory = value, None
        fields[field_name] = (base.model_fields[field_name].annotation, info)
    title = "".join(part.capitalize() for part in name.replace("-", "_").split("_")) + "Settings"
    model = create_model(title, __base__=base, __doc__=f"{base.__doc__} ({name}'s defaults)",
                         __module__=base.__module__, **fields)
    setattr(sys.modules[base.__module__], title, model)  # found by name, as pickle looks classes up
    return model
