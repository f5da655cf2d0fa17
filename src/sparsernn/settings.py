"""Settings models that plug-ins own: each sparsity method, cell type and task declares its settings as a
pydantic model, and the run config nests the one its name selects (``sparsity: {method: rigl, ...}``).

This module sits below ``config``: it knows no method, cell or task. A ``SettingsFamily`` is the seam
between a config section (``sparsity``) and the registry that names its plug-ins (``METHODS``): the
plug-in layer binds a lookup into it (``family.bind(lookup, names)``), and the config asks it for the
model of a name at validation time. The package that registers the built-in plug-ins of a family is
named by the top of the package (``sparsernn/__init__.py``: ``settings.provide(...)``, the way entry
points name theirs) and imported on the family's first lookup, so ``import sparsernn.config`` loads no
model code, this module names none, and a config is never validated before the plug-ins registered.

Reading is forgiving where it must be, so that old flat configs (every method's field in one section,
unset ones ``null``) still load: a key the selected model does not declare is dropped when it holds
"unset" (``None``, or the value that another plug-in's model has as its default), and refused with one
line naming it and what the plug-in reads otherwise. A ``None`` given for a field whose default is not
``None`` means "the default", as it always did.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError


class Settings(BaseModel):
    """A section of a run's config, or a plug-in's settings: unknown keys refused, assignments checked,
    no infinite or NaN value (1e999 is YAML's inf), no NUL character in a string."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # set by ``freeze``: a config resolved where it entered is passed on as a value nobody changes
    _frozen: bool = PrivateAttr(default=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and self._frozen:
            raise TypeError(f"{type(self).__name__}.{name}: this config is resolved and immutable; change a copy "
                            "(config.model_copy(deep=True)) or the config before it is resolved")
        super().__setattr__(name, value)

    def __deepcopy__(self, memo: dict[int, Any] | None = None):
        copied = super().__deepcopy__(memo)  # nested sections are deep-copied through this too
        copied._frozen = False  # a copy is a new value, to be changed and resolved again
        return copied

    def freeze(self):
        """Make this config and every section of it immutable; returns it."""
        for value in self.__dict__.values():
            if isinstance(value, Settings):
                value.freeze()
        self._frozen = True
        return self

    @property
    def frozen(self) -> bool:
        return self._frozen

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """A NUL character (YAML's "\\0") is in no name or path: refused where it is written, not met as a crash
        when the path is opened."""
        if isinstance(value, str) and "\0" in value:
            raise ValueError(f"contains a NUL character, which no name or path can: {value!r}")
        return value


def own_fields(model: type[BaseModel], base: type[BaseModel]) -> tuple[str, ...]:
    """The fields ``model`` declares beyond ``base``'s (a plug-in's own settings), in order."""
    return tuple(name for name in model.model_fields if name not in base.model_fields)


class SettingsFamily:
    """The settings models of one kind of plug-in, by name: ``section`` of the run config, selected by its
    ``key`` field (``sparsity.method``). ``provider`` is the package whose import registers the built-in
    plug-ins and binds their lookup; ``aliases`` map old names to today's; ``unused`` words the refusal of
    a setting the selected plug-in does not read."""

    def __init__(self, section: str, key: str, kind: str, unused: str) -> None:
        self.section, self.key, self.kind, self.unused = section, key, kind, unused
        self.provider: str | None = None
        self.base: type[Settings] | None = None
        self.aliases: dict[str, str] = {}
        self._lookup: Callable[[str], type[Settings]] | None = None
        self._names: Callable[[], Iterable[str]] = lambda: ()

    def bind(self, lookup: Callable[[str], type[Settings]], names: Callable[[], Iterable[str]]) -> None:
        """Called by the plug-in registry: ``lookup(name)`` gives a name's model (raising ``ValueError`` with
        the known names for an unknown one), ``names()`` the registered names. (``base``, the section's
        model, is set by ``config``.)"""
        self._lookup, self._names = lookup, names

    def _loaded(self) -> None:
        if self._lookup is None and self.provider is not None:
            importlib.import_module(self.provider)  # registers the built-ins and binds the lookup
        if self._lookup is None:
            raise RuntimeError(f"no {self.kind}s are registered (settings.provide names their package)")

    def names(self) -> list[str]:
        self._loaded()
        return list(self._names())

    def canonical(self, name: Any) -> Any:
        return self.aliases.get(name, name) if isinstance(name, str) else name

    def model(self, name: str) -> type[Settings]:
        """The settings model of ``name``; an unknown name is a ``ValueError`` listing the known ones."""
        self._loaded()
        return self._lookup(self.canonical(name))

    def models(self) -> dict[str, type[Settings]]:
        return {name: self.model(name) for name in self.names()}

    def fields(self) -> dict[str, FieldInfo]:
        """Every field of every plug-in's model (the base's first), by name: the first declaration of each."""
        self._loaded()
        found = dict(self.base.model_fields)
        for model in self.models().values():
            for name, info in model.model_fields.items():
                found.setdefault(name, info)
        return found

    def declaring(self, field: str) -> list[str]:
        """The names whose settings declare ``field``."""
        return [name for name, model in self.models().items() if field in model.model_fields]

    def _unset_elsewhere(self, field: str, value: Any) -> bool:
        """Whether ``value`` is the default of ``field`` in every plug-in's model that declares it (what an
        old flat config held for a setting nobody set)."""
        defaults = [model.model_fields[field] for model in self.models().values() if field in model.model_fields]
        return bool(defaults) and all(not info.is_required() and info.get_default(call_default_factory=True) == value
                                      for info in defaults)

    def default_name(self) -> str:
        self._loaded()
        return self.base.model_fields[self.key].default

    def select(self, value: Any) -> Any:
        """A section's raw value validated as the model its key names (a mapping only; anything else is
        left to the base model's own validation, which names what it expected)."""
        if not isinstance(value, dict):
            return value
        name = self.canonical(value.get(self.key, self.default_name()))
        if not isinstance(name, str):
            return value  # the base model says what it expected of the key
        try:
            model = self.model(name)
        except ValueError as exc:
            raise _line_error(self.key, name, str(exc)) from None
        return model.model_validate(value)

    def filter(self, model: type[Settings], data: dict[str, Any]) -> dict[str, Any]:
        """``data`` for ``model``: old names made today's, unset fields of other plug-ins dropped, ``None``
        for a field that cannot hold it read as its default; a setting of another plug-in is refused."""
        self._loaded()
        name = self.canonical(data.get(self.key, self.default_name()))
        out = {}
        for field, item in data.items():
            info = model.model_fields.get(field)
            if field == self.key:
                out[field] = name
            elif info is None:
                if item is None or self._unset_elsewhere(field, item):
                    continue  # an old flat config's unset field
                if isinstance(name, str) and self.declaring(field):
                    reads = ", ".join(own_fields(model, self.base)) or "no other setting"
                    raise _line_error(field, item, self.unused.format(field=field, name=name, reads=reads))
                out[field] = item  # refused by the model as unknown
            elif not (item is None and not _accepts_none(info)):
                out[field] = item
        return out


def _accepts_none(info: FieldInfo) -> bool:
    annotation = info.annotation
    return annotation is None or type(None) in typing.get_args(annotation)


class PluginSettings(Settings):
    """The base of a section whose model a plug-in's name selects (``ModelConfig`` by ``cell``, ...).
    ``ModelConfig(cell="rhn", depth=3)`` builds the cell's own model (a subclass), and every model of the
    family reads its input through ``family.filter`` (old flat configs, settings of other plug-ins)."""

    family: ClassVar[SettingsFamily | None] = None

    def __new__(cls, /, *args: Any, **data: Any) -> Any:
        family = cls.family
        if family is not None and cls is family.base and isinstance(data.get(family.key), str):
            model = family.model(data[family.key])
            if model is not cls:
                return super().__new__(model)  # Python then runs model.__init__(**data)
        return super().__new__(cls)

    @model_validator(mode="before")
    @classmethod
    def _plugin_fields(cls, data: Any) -> Any:
        family = cls.family
        return family.filter(cls, data) if family is not None and isinstance(data, dict) else data


def _line_error(field: str, value: Any, message: str) -> ValidationError:
    """A validation error at ``field`` with ``message``, as pydantic raises it (it is prefixed with the section)."""
    error = PydanticCustomError("settings", "{message}", {"message": message})
    return ValidationError.from_exception_data("Settings", [InitErrorDetails(type=error, loc=(field,), input=value)])


METHOD_SETTINGS = SettingsFamily("sparsity", "method", "sparsity method",
                                 "not used by sparsity.method {name} (it reads {reads})")
CELL_SETTINGS = SettingsFamily("model", "cell", "cell", "{field} is not used by cell {name} (it reads {reads})")
TASK_SETTINGS = SettingsFamily("data", "task", "task", "{field} is not used by task {name} (it reads {reads})")
TASK_SETTINGS.aliases.update({"language-model": "lm", "tagger": "tagging"})  # the checkpoint kinds of sparsernn <= 0.3

FAMILIES = {family.section: family for family in (METHOD_SETTINGS, CELL_SETTINGS, TASK_SETTINGS)}


def provide(**providers: str) -> None:
    """Name, per config section, the package whose import registers its built-in plug-ins
    (``provide(sparsity="sparsernn.sparsity")``); it is imported on the family's first lookup."""
    for section, package in providers.items():
        FAMILIES[section].provider = package


def one_of(names: Callable[[], Iterable[str]]) -> Any:
    """A ``str`` field whose value must be one of ``names()`` (a registry's, read when validating, so a mode
    registered later is accepted), refused in pydantic's own words for a ``Literal``."""
    def check(value: str) -> str:
        known = list(names())
        if value not in known:
            expected = " or ".join([", ".join(repr(n) for n in known[:-1]), repr(known[-1])] if len(known) > 1
                                   else [repr(n) for n in known])
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
        return value

    return Annotated[str, AfterValidator(check)]
