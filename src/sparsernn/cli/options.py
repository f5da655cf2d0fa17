"""Options generated from settings models: ``train``'s config-field options (``TRAIN_OPTION_FIELDS``, one
per field of the run config's sections and of every registered method's, cell's and task's settings
model, with the fields' own descriptions as help) and ``hyperprune``'s search and cluster settings.

An option's text is parsed like a YAML value (comma lists split for list fields), checked against its
field alone so a bad one is named by its option, and the whole config is validated once after that;
``--set FIELD=VALUE`` reaches any field.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Optional

import typer

from sparsernn.errors import ConfigError, SparsernnError
from sparsernn.settings import FAMILIES

SECTIONS = ("data", "model", "optim", "sparsity", "train")


def _train_option_fields() -> dict[str, str]:
    """train option -> the config field it sets, one per field of every section, plug-ins' settings
    included (``--death``: ``sparsity.death``): ``--field-name``, or the ``option`` a field declares
    (``json_schema_extra``: ``--hidden`` for ``model.hidden_sizes``). Help text and type come from the field."""
    from sparsernn.config import section_fields

    options: dict[str, str] = {}
    for section in SECTIONS:
        for name, info in section_fields(section).items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            options.setdefault(extra.get("option", f"--{name.replace('_', '-')}"), f"{section}.{name}")
    return options


TRAIN_OPTION_FIELDS = _train_option_fields()

# hyperprune option -> the SearchSettings field it sets
SEARCH_OPTION_FIELDS = {f"--{name.replace('_', '-')}": name for name in
                        ("sampler", "n", "e0", "ei", "survivors", "rank_by", "strategy", "distance", "k", "state",
                         "samples", "steps", "seed", "workers")}

# hyperprune option -> the ExecutorSettings field it sets (where candidates train; allowed with --resume)
EXECUTOR_OPTION_FIELDS = {f"--{name.replace('_', '-')}": name for name in
                          ("executor", "address", "cpus_per_candidate", "gpus_per_candidate", "retries")}


def with_options(command: Callable, options: Iterable[inspect.Parameter]) -> Callable:
    """``command`` (which takes ``**fields``) declaring ``options`` in place of ``**fields``, as Typer reads it."""
    fixed = inspect.signature(command, eval_str=True)
    command.__signature__ = fixed.replace(parameters=[
        *(p for p in fixed.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD), *options])
    command.__annotations__ = {p.name: p.annotation for p in command.__signature__.parameters.values()}
    return command


def _parameter_name(option: str) -> str:
    return option[2:].replace("-", "_")


# ---- train: one option per config field -----------------------------------------------------------


def _field(dotted: str):
    from sparsernn.config import section_fields

    section, name = dotted.split(".")
    return section_fields(section)[name]


def _accepts(annotation: Any, kind: type) -> bool:
    """Whether a field annotation (``int | list[int] | None`` ...) admits ``kind`` (list or str)."""
    if annotation is kind or typing.get_origin(annotation) is kind:
        return True
    return any(_accepts(arg, kind) for arg in typing.get_args(annotation) if arg is not type(None))


def option_value(option: str, text: str) -> Any:
    """The value an option's text gives its config field: comma lists split for list fields, plain
    strings kept for string fields, anything else read as a YAML scalar (numbers, null, true)."""
    import yaml

    annotation = _field(TRAIN_OPTION_FIELDS[option]).annotation

    def scalar(part: str) -> Any:
        if annotation is str or annotation == Optional[str]:
            return part
        try:
            return yaml.safe_load(part)
        except yaml.YAMLError:
            return part

    # a list field splits on commas; one that also takes a plain number (lasso_lambda) splits only with one
    members = () if typing.get_origin(annotation) is list else typing.get_args(annotation)  # a union's members
    scalar_too = any(arg in (int, float) for arg in members)
    if _accepts(annotation, list) and ("," in text or not scalar_too):
        parts = [p.strip() for p in text.split(",")]
        if not all(parts):
            raise SparsernnError(f"{option}: expected a comma-separated list without empty items, got {text!r}")
        return [scalar(p) for p in parts]
    return scalar(text)


def _check_option(option: str, text: Any, value: Any) -> None:
    """The option's own value checked against its field alone, so a bad one is named by its option."""
    from sparsernn.config import check_field

    dotted = TRAIN_OPTION_FIELDS[option]
    try:
        check_field(dotted, value, "")
    except ConfigError as exc:
        section, _, name = dotted.partition(".")
        named = section in FAMILIES and FAMILIES[section].key == name  # "unknown cell 'x'" quotes it already
        raise SparsernnError(f"{option}{'' if named else f' {text!r}'}: {str(exc).removeprefix(': ')}") from None


def _train_option(option: str, dotted: str) -> inspect.Parameter:
    """A ``train`` parameter for one config field, with the field's description as its help."""
    info = _field(dotted)
    section = dotted.split(".")[0]
    help_text = info.description or ""
    family = FAMILIES.get(section)
    if family is not None and dotted == f"{section}.{family.key}":  # --method, --cell, --task: the names
        help_text = " | ".join(family.names())
    if info.annotation is bool:
        kind, decl = Optional[bool], typer.Option(f"{option}/--no-{option[2:]}", help=help_text,
                                                  rich_help_panel=f"Config: {section}")
    else:
        kind, decl = Optional[str], typer.Option(option, help=help_text, rich_help_panel=f"Config: {section}",
                                                 metavar=dotted.split(".")[1].upper())
    return inspect.Parameter(_parameter_name(option), inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind, decl])


def train_options() -> list[inspect.Parameter]:
    return [_train_option(option, dotted) for option, dotted in TRAIN_OPTION_FIELDS.items()]


def config_overrides(set_: list[str] | None, fields: dict[str, Any]) -> dict[str, Any]:
    """The dotted overrides the ``--set`` items and the config-field options given make, each checked."""
    from sparsernn.config import parse_override

    overrides: dict[str, Any] = dict(parse_override(item) for item in set_ or [])
    for option, dotted in TRAIN_OPTION_FIELDS.items():
        value = fields[_parameter_name(option)]
        if value is not None:
            overrides[dotted] = value if isinstance(value, bool) else option_value(option, value)
            _check_option(option, value, overrides[dotted])
    return overrides


def resolve_named(config, fields: dict[str, Any]):
    """``resolve_method(config)``; a problem with a field that an option set is named by that option."""
    from sparsernn.sparsity import resolve_method

    try:
        return resolve_method(config)
    except SparsernnError as exc:
        options = {dotted: option for option, dotted in TRAIN_OPTION_FIELDS.items()
                   if fields[_parameter_name(option)] is not None}
        field = str(exc).partition(":")[0]
        raise SparsernnError(f"{options[field]}: {exc}" if field in options else str(exc)) from None


# ---- hyperprune: search and cluster settings --------------------------------------------------------


def settings_from_options(model, options: dict[str, str], fields: dict[str, Any]):
    """``model`` (a pydantic settings class) from the options given; a bad value is one line naming its option."""
    from pydantic import ValidationError

    from sparsernn.files import load_yaml
    from sparsernn.validation import validation_line

    values = {}
    for option, name in options.items():
        text = fields[name]
        if text is not None:
            values[name] = None if (name == "k" and text == "all") else \
                text if name in ("address", "rank_by") else load_yaml(text, option)
    try:
        return model(**values)
    except ValidationError as exc:
        def option_of(loc: tuple[str, ...]) -> str:
            name = loc[0] if loc else ""
            return next((o for o, n in options.items() if n == name), name)

        raise SparsernnError(validation_line(exc, given="named", name=option_of)) from None


def _search_option(option: str, name: str, cluster: bool = False) -> inspect.Parameter:
    from sparsernn.search import SearchSettings
    from sparsernn.search.cluster import ExecutorSettings

    info = (ExecutorSettings if cluster else SearchSettings).model_fields[name]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
        Optional[str], typer.Option(option, help=info.description, rich_help_panel="Cluster" if cluster else "Search",
                                    metavar=name.upper())])


def search_options() -> list[inspect.Parameter]:
    return [*(_search_option(option, name) for option, name in SEARCH_OPTION_FIELDS.items()),
            *(_search_option(option, name, cluster=True) for option, name in EXECUTOR_OPTION_FIELDS.items())]
