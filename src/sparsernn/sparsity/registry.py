"""The registry of sparsity methods: each method states its defaults, checks its settings and builds
its ``Sparsifier``, in the module that implements it.

``resolve_method(config)`` fills the sparsity fields a run leaves unset from its method's defaults
(some are functions of the run's planned length, ``train.epochs``) and refuses settings the method
cannot use; the Trainer records the resolved config, so ``config.yaml`` says exactly what ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sparsernn.errors import ConfigError
from sparsernn.registry import Registry

if TYPE_CHECKING:
    from sparsernn.config import RunConfig, SparsityConfig
    from sparsernn.sparsity.base import Sparsifier


@dataclass(frozen=True)
class Method:
    """A sparsity method: ``fields`` are the ``sparsity.*`` settings it reads, ``defaults`` fill the ones
    left unset, ``resolve`` checks and derives the rest in place (raising ``ValueError``), ``build``
    makes its Sparsifier for a resolved config and the number of optimizer steps per epoch."""

    name: str
    description: str
    build: Callable[[RunConfig, int], Sparsifier]
    fields: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    resolve: Callable[[RunConfig], None] | None = None


METHODS: Registry[Method] = Registry("sparsity method")

# Settings every method may carry whatever it is (the density target is checked by each method).
_COMMON = ("method", "density", "prunable")


def _unused_fields(sparsity: SparsityConfig, used: Iterable[str]) -> list[str]:
    """Fields set to something other than their default that the method does not read."""
    used = set(used) | set(_COMMON)
    return [name for name, info in type(sparsity).model_fields.items()
            if name not in used and getattr(sparsity, name) != info.get_default(call_default_factory=True)]


def resolve_method(config: RunConfig) -> RunConfig:
    """A copy of ``config`` with its sparsity method's defaults filled in and its settings checked;
    a problem is a one-line ``ConfigError`` naming the field."""
    resolved = config.model_copy(deep=True)
    sparsity = resolved.sparsity
    try:
        method = METHODS[sparsity.method]
    except ValueError as exc:
        raise ConfigError(f"sparsity.method: {exc}") from None
    unused = _unused_fields(sparsity, method.fields)
    if unused:
        raise ConfigError(f"sparsity.{unused[0]}: not used by sparsity.method {method.name} "
                          f"(it reads {', '.join(method.fields) or 'no other setting'})")
    try:
        for name, value in method.defaults.items():
            if getattr(sparsity, name) is None:
                setattr(sparsity, name, value)
        if method.resolve is not None:
            method.resolve(resolved)
    except ValueError as exc:
        raise ConfigError(str(exc).removeprefix("Value error, ")) from None
    return resolved


def build_sparsifier(config: RunConfig, steps_per_epoch: int) -> Sparsifier:
    """The Sparsifier of a config (resolved here, so a config straight from YAML works too)."""
    resolved = resolve_method(config)
    return METHODS[resolved.sparsity.method].build(resolved, steps_per_epoch)


def needs_density(config: RunConfig) -> None:
    """Methods with a density target refuse the dense default."""
    if config.sparsity.density == 1.0:
        raise ValueError(f"sparsity.method {config.sparsity.method} needs sparsity.density < 1 (e.g. --density 0.33)")
