"""What there is to choose from: ``presets``, ``methods``, ``cells`` and ``tasks``, each listed from its
registry and its settings models."""

from __future__ import annotations

from sparsernn.cli.app import out, print_table


def presets() -> None:
    """The run presets in configs/, each with its one-line description."""
    from sparsernn.config import list_presets, preset_description

    print_table("presets (sparsernn train --preset NAME)", ["preset", "what it is"],
                [[name, preset_description(name)] for name in list_presets()], justify="left")


def _settings(model, base) -> str:
    """A settings model's own fields as ``name: default`` (just ``name`` when it is derived or unset)."""
    from sparsernn.settings import own_fields

    def shown(name: str) -> str:
        default = model.model_fields[name].get_default(call_default_factory=True)
        return name if default is None else f"{name}: {default}"

    return ", ".join(shown(name) for name in own_fields(model, base))


def methods() -> None:
    """The sparsity methods (train --method NAME), each with its one-line description and its settings."""
    from sparsernn.config import SparsityConfig
    from sparsernn.sparsity import METHODS

    print_table("sparsity methods (sparsernn train --method NAME)",
                ["method", "what it is", "settings it reads: default"],
                [[method.name, method.description, _settings(method.settings, SparsityConfig)] for method in METHODS],
                justify="left")
    out.print("stop_epoch defaults to the planned length (75% of it for rigl); gmp prunes until 75% of it",
              soft_wrap=True)


def cells() -> None:
    """The recurrent cell types (train --cell NAME), each with its one-line description and its own settings."""
    from sparsernn.config import ModelConfig
    from sparsernn.models.cells import CELLS

    print_table("cell types (sparsernn train --cell NAME)", ["cell", "what it is", "gates", "its settings: default"],
                [[cell.name, cell.description, " ".join(cell.gates), _settings(cell.settings, ModelConfig)]
                 for cell in CELLS], justify="left")


def tasks() -> None:
    """The tasks (train --task NAME), each with its one-line description, primary metric and own settings."""
    from sparsernn.config import DataConfig
    from sparsernn.tasks import TASKS

    print_table("tasks (sparsernn train --task NAME)", ["task", "what it is", "scored by", "its settings: default"],
                [[task.name, task.description, f"{task.primary.name} ({task.primary.goal})",
                  _settings(task.settings, DataConfig)] for task in TASKS], justify="left")
