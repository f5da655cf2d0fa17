"""Typed run configuration, YAML presets and overrides.

A run is described by one ``RunConfig``: ``data``, ``model``, ``optim`` and ``train`` sections.
It is resolved in layers, later ones winning: a named preset (``configs/<name>.yaml``), a YAML
config file, then command-line overrides given as dotted field paths (``optim.lr=20``).

``data``, ``model`` and ``sparsity`` hold the settings model that their task, cell and method own
(``sparsity: {method: rigl, density: 0.33, death: magnitude, ...}``): this module declares the fields
they share and asks ``settings.FAMILIES`` for the model a name selects; it imports no model code.

Learning rates and clip norms are for the **per-token mean** cross-entropy loss. The papers built
on the TensorFlow PTB tutorial (Zaremba et al. 2014) sum the loss over the BPTT steps and average
it over the batch; their gradients are ``bptt`` times ours, so their ``lr`` becomes ``lr * bptt``
here and their clip norm ``clip / bptt`` — the same updates exactly (see tests/test_train.py).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from sparsernn.errors import ConfigError
from sparsernn.files import load_yaml
from sparsernn.settings import (CELL_SETTINGS, FAMILIES, METHOD_SETTINGS, TASK_SETTINGS, PluginSettings, Settings,
                                SettingsFamily)
from sparsernn.validation import read_yaml_file, validation_line

_Section = Settings  # the sections of a run: unknown keys refused, assignments checked, no inf, NaN or NUL


class DataConfig(PluginSettings):
    """The data section: the shared fields; a task's own settings model (``TASK_SETTINGS``) adds its own."""

    family: ClassVar[SettingsFamily | None] = TASK_SETTINGS
    dir: str | None = Field(
        None,
        description="corpus directory with train/valid/test files; None searches $SPARSERNN_DATA/ptb, "
        "./data/ptb, ../shared/data/ptb, then falls back to a generated corpus",
        json_schema_extra={"option": "--data-dir"},
    )
    batch_size: int = Field(20, gt=0, description="parallel streams in training")
    eval_batch_size: int = Field(10, gt=0, description="parallel streams in validation/test")
    bptt: int = Field(20, gt=0, description="unrolled steps per training window")
    task: str = Field("lm", description="what is learned, a name in the task registry: lm (language modelling, "
                      "PTB) | tagging (sequence tagging, WSJ POS, two-column CoNLL files) | any registered task")
    epoch_tokens: int | None = Field(
        None, gt=0, description="cap on training tokens per epoch (successive epochs take successive slices)"
    )
    train_tokens: int | None = Field(
        None, gt=0, description="train on the first N tokens of the training split only (tagging: the first "
        "sentences holding N tokens, the vocabulary still the whole split's: for a study of a smaller corpus, "
        "give it a directory of its own, as benchmarks/pos_tagging.py does; for scaled studies in which "
        "a model sees the same text many times, so that it can overfit and regularisation matters)")


class ModelConfig(PluginSettings):
    """The model section: the fields every cell shares; a cell with options of its own (rhn's depth,
    block_lstm's segments) registers a subclass with them (``Cell.settings``), which ``cell`` selects."""

    family: ClassVar[SettingsFamily | None] = CELL_SETTINGS
    cell: str = Field("lstm", description="recurrent cell type, a name in the cell registry (sparsernn cells)")
    hidden_sizes: list[int] = Field(default_factory=lambda: [200, 200], min_length=1,
                                    description="per-layer hidden sizes, e.g. 373,315",
                                    json_schema_extra={"option": "--hidden"})
    embedding_size: int | None = Field(None, gt=0, description="None: the first layer's hidden size")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="on embeddings, between layers and before the decoder")
    tie_weights: bool = Field(False, description="share the embedding and decoder weights")
    init_range: float | None = Field(0.1, gt=0.0, description="uniform init in [-r, r]; None keeps PyTorch's")
    variational_dropout: bool = Field(
        False, description="model.dropout with one mask per sequence (window) instead of per step (Gal & Ghahramani)")
    dropout_input: float | None = Field(None, ge=0.0, lt=1.0, description="dropout on the embedding output "
                                        "(AWD-LSTM's dropouti); None: model.dropout")
    dropout_hidden: float | None = Field(None, ge=0.0, lt=1.0, description="dropout between recurrent layers "
                                         "(AWD-LSTM's dropouth); None: model.dropout")
    dropout_output: float | None = Field(None, ge=0.0, lt=1.0, description="dropout before the decoder; "
                                         "None: model.dropout")
    embedding_density: float = Field(1.0, gt=0.0, le=1.0, description="trainable fraction of the embedding: "
                                     "words get embeddings whose length follows their frequency (1: dense)")
    embedding_sort: Literal["up", "down", "none", "random"] = Field(
        "up", description="sparse embedding: up (frequent words longest) | down | none (vocabulary order) | random")
    embedding_bins: list[int] | None = Field(None, description="sparse embedding: bin widths adding up to the "
                                             "embedding size (None: one bin per dimension)")
    embedding_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="drop whole words' embeddings, one mask "
                                     "per forward pass (AWD-LSTM's dropoute)")
    weight_drop: float = Field(0.0, ge=0.0, lt=1.0, description="DropConnect on the recurrent weights W_hh, a "
                               "fresh mask per forward pass (AWD-LSTM's wdrop); fused kernels kept")
    projection_size: int | None = Field(None, gt=0, description="tagger: a tanh layer of this size between the "
                                        "recurrent layers and the tag softmax (Demeester et al.: 10)")

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_sizes(cls, sizes: list[int]) -> list[int]:
        if any(h <= 0 for h in sizes):
            raise ValueError("every hidden size must be positive")
        return sizes

    @model_validator(mode="after")
    def _sparse_embedding(self) -> ModelConfig:
        if self.embedding_density < 1.0 and self.tie_weights:
            raise ValueError("embedding_density < 1 needs tie_weights off (the decoder would share the blocks)")
        size = self.embedding_size or self.hidden_sizes[0]
        if self.embedding_bins is not None and sum(self.embedding_bins) != size:
            raise ValueError(f"embedding_bins add up to {sum(self.embedding_bins)}, not the embedding size {size}")
        return self

    @model_validator(mode="after")
    def _tied_sizes_match(self) -> ModelConfig:
        if self.tie_weights and self.hidden_sizes[-1] != (self.embedding_size or self.hidden_sizes[0]):
            raise ValueError(
                f"tie_weights needs the last hidden size ({self.hidden_sizes[-1]}) to equal the embedding size "
                f"({self.embedding_size or self.hidden_sizes[0]})"
            )
        return self


class OptimConfig(_Section):
    name: Literal["sgd", "adam", "asgd", "nt_asgd"] = Field("sgd", description="sgd | adam | asgd | nt_asgd",
                                                            json_schema_extra={"option": "--optimizer"})
    lr: float = Field(20.0, gt=0.0, description="for the per-token mean loss")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty")
    clip: float | None = Field(0.25, gt=0.0, description="max global gradient norm; None disables")
    lr_decay: float = Field(1.0, gt=0.0, le=1.0, description="factor applied per epoch after decay_start_epoch")
    decay_start_epoch: int = Field(0, ge=0, description="last epoch run at the initial lr")
    nonmono: int = Field(5, gt=0, description="nt_asgd: epochs without improvement before averaging starts")


class TrainConfig(_Section):
    epochs: int = Field(
        13, gt=0, description="planned length of the run: the horizon every schedule (lr decay, DST death rate and "
        "stop epoch, GMP) is a function of; a run trained in segments or stopped early follows the same schedules")
    seed: int = Field(1, description="seed of every random choice (init, dropout, masks)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto | cpu | cuda")
    log_interval: int = Field(100, gt=0, description="steps between progress updates")
    checkpoint_every: int | None = Field(
        None, gt=0, description="also save a resume checkpoint every N steps inside an epoch"
    )
    init_from: str | None = Field(None, description="start from this checkpoint's weights (fine-tuning)")


class SparsityConfig(PluginSettings):
    """How the model is made sparse: the settings every method carries. Each method in the registry of
    sparsity methods (``sparsernn.sparsity.METHODS``) owns a subclass with its own settings and their
    defaults (``Method.settings``), which ``method`` selects; the method's ``resolve`` derives what
    follows from the rest of the run, and the run records the filled-in config it trained with."""

    family: ClassVar[SettingsFamily | None] = METHOD_SETTINGS
    method: str = Field("dense", description="sparsity method, a name in the method registry (sparsernn methods)")
    density: float = Field(1.0, gt=0.0, le=1.0, description="fraction of prunable weights kept (1 - sparsity)")
    prunable: list[Literal["embedding", "recurrent", "decoder"]] = Field(
        default_factory=lambda: ["embedding", "recurrent", "decoder"], min_length=1,
        description="weights that masks cover: some of embedding,recurrent,decoder")


SparsitySettings = SparsityConfig  # the base of every method's settings model
TASK_SETTINGS.base, CELL_SETTINGS.base, METHOD_SETTINGS.base = DataConfig, ModelConfig, SparsityConfig


class RunConfig(_Section):
    """A run: its sections. ``data``, ``model`` and ``sparsity`` hold the settings model that their task,
    cell and method name (looked up in ``settings.FAMILIES`` when validated)."""

    data: SerializeAsAny[DataConfig] = Field(default_factory=DataConfig)
    model: SerializeAsAny[ModelConfig] = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    sparsity: SerializeAsAny[SparsityConfig] = Field(default_factory=SparsityConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("data", "model", "sparsity", mode="before")
    @classmethod
    def _plugin_settings(cls, value: Any, info: ValidationInfo) -> Any:
        return FAMILIES[info.field_name].select(value)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def section_fields(section: str) -> dict[str, Any]:
    """The fields a config section can hold, by name (``FieldInfo``s): a plug-in section's are those of
    every registered plug-in's settings model (the shared ones first)."""
    family = FAMILIES.get(section)
    if family is not None:
        return family.fields()
    return dict(RunConfig.model_fields[section].annotation.model_fields)


def presets_dir() -> Path:
    """Presets ship inside the wheel as ``sparsernn/configs``; in a source checkout they are ``configs/``."""
    packaged = resources.files("sparsernn") / "configs"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "configs"


def list_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def preset_description(name: str) -> str:
    """A preset's first comment line (each preset file starts by saying what it is)."""
    for line in (presets_dir() / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _read_yaml(path: Path) -> dict[str, Any]:
    def not_found() -> str:
        hint = f" (a preset of that name exists: --preset {path.name})" if path.name in list_presets() else ""
        return f"config file not found{hint}"

    data = read_yaml_file(path, not_found=not_found, unreadable="cannot read config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return data


def load_preset(name: str) -> dict[str, Any]:
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    return _read_yaml(path)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a config section")
    node[leaf] = value


def validate(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a nested dict into a RunConfig; the first problem becomes a one-line ConfigError."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {validation_line(exc)}") from None


def check_field(dotted: str, value: Any, source: str) -> None:
    """One field's value checked against its own declaration (whatever the other fields are), so a
    value a later layer replaces is still checked, and named by its ``source``. A plug-in's setting
    (``sparsity.death``) is checked as the first plug-in that declares it declares it."""
    section, _, name = dotted.partition(".")
    family = FAMILIES.get(section)
    owners = family.declaring(name) if family is not None and name != family.key else []
    data = {name: value, **({family.key: owners[0]} if owners and name not in family.base.model_fields else {})}
    try:
        validate({section: data}, source)
    except ConfigError as exc:
        problem = str(exc).removeprefix(f"{source}: ")
        if problem.startswith(dotted):  # not a cross-field check against the defaults it was checked with
            raise


def check_fields(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Every field of one layer (a preset, a config file) checked on its own; returns ``data``."""
    for section, fields in data.items():
        if not isinstance(fields, dict):
            validate({section: fields}, source)  # names the section and what it expected
            continue
        for name, value in fields.items():
            check_field(f"{section}.{name}", value, source)
    return data


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Preset, then config file, then dotted overrides (``{"optim.lr": 20}``), validated once at the end."""
    data: dict[str, Any] = {}
    sources = []
    if preset is not None:
        data = _deep_merge(data, check_fields(load_preset(preset), f"preset {preset}"))
        sources.append(f"preset {preset}")
    if config_file is not None:
        data = _deep_merge(data, check_fields(_read_yaml(Path(config_file)), str(config_file)))
        sources.append(str(config_file))
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    if overrides:
        sources.append("overrides")
    return validate(data, " + ".join(sources) or "config")


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=20'`` -> ``('optim.lr', 20)``; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected FIELD=VALUE, e.g. optim.lr=20")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw, f"override {text!r}")
    except ConfigError:
        value = raw
    key = key.strip()
    check_field(key, value, f"--set {text}")  # checked now: a later option may replace it
    return key, value


def density_override(overrides: dict[str, Any], sparsity: float | None) -> dict[str, Any]:
    """``overrides`` with ``sparsity.density`` set from a sparsity (the fraction pruned, ``1 - density``)
    when one is given; a density and a sparsity together, or a sparsity outside [0, 1), is refused."""
    if sparsity is None:
        return overrides
    if "sparsity.density" in overrides:
        raise ConfigError("give --density or --sparsity, not both")
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"--sparsity: expected a fraction in [0, 1), got {sparsity}")
    return {**overrides, "sparsity.density": round(1.0 - sparsity, 12)}


def upgrade_stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config stored by an older sparsernn (in a checkpoint or a search database), with what it ran
    made explicit where a field or default has changed since. For stored configs only: a user's file
    gets today's defaults.

    - 0.2 stored ``sparsity.zero_threshold: 1e-4`` for every method; only iss and l1 read it.
    - 0.2's group Lasso and L1 ran the subgradient update (proximal is the default from 0.3).

    Every config read, stored or not, is also upgraded where it is validated (``settings.SettingsFamily``):
    up to 0.3 the ``sparsity`` and ``model`` sections held every method's and cell's fields, unset ones
    ``null`` (or their one default); those are dropped, so a flat config loads as the nested settings of
    its method and cell and compares equal to the config built today from the same choices (resume
    compares them); the task names of 0.3's checkpoints (``language-model``, ``tagger``) read as today's.
    """
    sparsity = dict(config.get("sparsity") or {})
    if not sparsity:
        return config
    lasso = sparsity.get("method") in ("iss", "l1")
    if not lasso and sparsity.get("zero_threshold") == 1e-4:
        del sparsity["zero_threshold"]
    if lasso and "lasso_update" not in sparsity:
        sparsity["lasso_update"] = "subgradient"
    return {**config, "sparsity": sparsity}

