"""The search space of a hyperpruning search, read from YAML.

Methodological choices are categorical (``choices``: the method family, sparse init, death, growth
and redistribution modes); non-methodological settings get ranges (``ranges``: death rate, learning
rate, ...) or fixed values (``fixed``); the target density is fixed per search. Keys are config
fields: ``sparsity.death`` or, for sparsity settings, just ``death``; ``user.NAME`` (``user.lr``,
``user.dropout``) is a hyperparameter of a user's own objective (``sparsernn.hyperprune`` hands it to
the objective as ``candidate.user["lr"]``; the toolkit's own search refuses it). A candidate is the base run
config with one point of the space applied; settings its method does not read are dropped (a
static mask has no death mode), so every candidate is a config its method accepts.

Example (``configs/search/paper.yaml``)::

    density: 0.33
    choices:
      init: [uniform, er]
      death: [magnitude, set, threshold, global_magnitude]
      redistribution: [none, magnitude, nonzeros]
    fixed:
      method: selfish
      death_rate: 0.8
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sparsernn.config import RunConfig, check_field, presets_dir, section_fields, validate
from sparsernn.errors import ConfigError
from sparsernn.sparsity import METHODS, resolve_method
from sparsernn.validation import read_yaml_file, validation_line



def field_name(key: str) -> str:
    """``death`` -> ``sparsity.death``; dotted names pass through."""
    return key if "." in key else f"sparsity.{key}"


def point_key(params: dict[str, Any]) -> tuple:
    """A point of a space as a hashable key (values by ``repr``: lists and floats alike)."""
    return tuple(sorted((key, repr(value)) for key, value in params.items()))


USER = "user"  # the section of a user objective's own hyperparameters (not a config field)


def _check_value(dotted: str, value: Any) -> None:
    if dotted.partition(".")[0] == USER:
        return  # the user's objective gives its own hyperparameters their meaning
    if dotted != "sparsity.method":  # the methods a search covers are checked below, with what it covers
        check_field(dotted, value, "")  # raises ConfigError naming the field and the value


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.integer and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"an integer range needs integer bounds, got low {self.low}, high {self.high}")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


class SearchSpace(BaseModel):
    """Where a hyperpruning search looks; see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    density: float = Field(gt=0.0, lt=1.0, description="target density, the same for every candidate")
    choices: dict[str, list[Any]] = Field(default_factory=dict)
    ranges: dict[str, Range] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)

    @field_validator("choices", "ranges", "fixed", mode="before")
    @classmethod
    def _full_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {field_name(str(k)): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _valid_fields(self) -> SearchSpace:
        seen: dict[str, str] = {}
        for group in ("choices", "ranges", "fixed"):
            for key in getattr(self, group):
                if key in seen:
                    raise ValueError(f"{key} is in both {seen[key]} and {group}")
                seen[key] = group
                section, _, name = key.partition(".")
                if section == USER and name.isidentifier():
                    continue
                if section not in RunConfig.model_fields or "." in name or name not in section_fields(section):
                    raise ValueError(f"{group}.{key}: not a config field")
                if key == "sparsity.density":
                    raise ValueError(f"{group}.{key}: the density is fixed per search (top-level density)")
        for key, options in self.choices.items():
            if not options or len(set(map(repr, options))) != len(options):
                raise ValueError(f"choices.{key}: expected a list of distinct options, got {options!r}")
            for option in options:
                _check_value(key, option)
        for key, value in self.fixed.items():
            _check_value(key, value)
        for key, bounds in self.ranges.items():
            _check_value(key, bounds.low)
            _check_value(key, bounds.high)
        methods = self.choices.get("sparsity.method", [self.fixed.get("sparsity.method")])
        for method in methods:
            if method is None:
                raise ValueError("choices or fixed must name sparsity.method (e.g. fixed: {method: selfish})")
            if method not in METHODS or method in ("dense", "iss", "l1"):
                raise ValueError(f"sparsity.method {method!r}: a search covers masked methods with a density "
                                 f"target (static, set, rigl, snfs, dsr, selfish, gmp)")
        # a varied setting no method of the space reads would list identical candidates as different
        read = set().union(*(METHODS[m].fields for m in methods)) | {"method", "density", "prunable"}
        for group in ("choices", "ranges"):
            for key in getattr(self, group):
                section, _, name = key.partition(".")
                if section == "sparsity" and name not in read:
                    raise ValueError(f"{group}.{key}: not read by {' or '.join(map(str, methods))}, so its values "
                                     "would train identical candidates (`sparsernn methods` lists what each reads)")
        return self

    def user_keys(self) -> list[str]:
        """The user objective's own hyperparameters this space varies or fixes (``user.lr``, ...)."""
        return [key for group in (self.choices, self.ranges, self.fixed) for key in group
                if key.partition(".")[0] == USER]

    # ---- what samplers see ----------------------------------------------------------------------

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        dists: dict[str, optuna.distributions.BaseDistribution] = {
            key: optuna.distributions.CategoricalDistribution(options) for key, options in self.choices.items()}
        for key, bounds in self.ranges.items():
            if bounds.integer:
                dists[key] = optuna.distributions.IntDistribution(int(bounds.low), int(bounds.high), log=bounds.log)
            else:
                dists[key] = optuna.distributions.FloatDistribution(bounds.low, bounds.high, log=bounds.log)
        return dists

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the choices (grid search); ranges must be fixed for a grid."""
        if self.ranges:
            raise ConfigError(f"a grid needs fixed values, not ranges, for {', '.join(self.ranges)} "
                              f"(move them to fixed:)")
        keys = list(self.choices)
        # a setting its method does not read (static's death) is dropped: points that would train the same
        # candidate are one point, not identical candidates listed as different
        points: dict[tuple, dict[str, Any]] = {}
        for values in itertools.product(*(self.choices[k] for k in keys)):
            point = self.effective(dict(zip(keys, values)))
            points.setdefault(point_key(point), point)
        return list(points.values())

    def effective(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` without the sparsity settings its method does not read (they change nothing it trains)."""
        method = {**self.fixed, **params}.get("sparsity.method")
        read = {"method", *METHODS[method].fields} if method in METHODS else None
        return {key: value for key, value in params.items()
                if read is None or not key.startswith("sparsity.") or key.partition(".")[2] in read}

    # ---- candidates -----------------------------------------------------------------------------

    def candidate_config(self, base: RunConfig, params: dict[str, Any]) -> RunConfig:
        """The base config with this point of the space applied (settings its method does not read
        dropped), resolved as it will run."""
        point = {**self.fixed, **params}
        data = base.to_dict()
        data["sparsity"] = {"method": point["sparsity.method"], "density": self.density,
                            "prunable": base.sparsity.prunable}
        read = set(METHODS[point["sparsity.method"]].fields)
        for key, value in point.items():
            section, _, name = key.partition(".")
            if section == USER or (section == "sparsity" and name not in read | {"method"}):
                continue
            data[section][name] = value
        return resolve_method(validate(data, "candidate"))


def load_space(source: str | Path) -> SearchSpace:
    """A search space from a YAML file or a preset name (``configs/search/<name>.yaml``)."""
    path = Path(source)
    if not path.suffix and not path.exists():
        path = presets_dir() / "search" / f"{source}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown search space {source!r}; presets: {', '.join(space_presets())}, "
                              f"or give a YAML file")
    data = read_yaml_file(path, not_found="search space file not found", unreadable="cannot read the search space")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping (density, choices, ranges, fixed)")
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_line(exc, unknown='unknown key', given='never')}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {str(exc).removeprefix(': ')}") from None


def space_presets() -> list[str]:
    return sorted(p.stem for p in (presets_dir() / "search").glob("*.yaml"))
