"""What there is to choose from: ``presets``, ``methods`` and ``cells``."""

from __future__ import annotations

from sparsernn.cli.app import out, print_table


def presets() -> None:
    """The run presets in configs/, each with its one-line description."""
    from sparsernn.config import list_presets, preset_description

    print_table("presets (sparsernn train --preset NAME)", ["preset", "what it is"],
                [[name, preset_description(name)] for name in list_presets()], justify="left")


def methods() -> None:
    """The sparsity methods (train --method NAME), each with its one-line description."""
    from sparsernn.sparsity import METHODS

    def settings(method) -> str:
        return ", ".join(f"{name}: {method.defaults[name]}" if name in method.defaults else name
                         for name in method.fields)

    print_table("sparsity methods (sparsernn train --method NAME)",
                ["method", "what it is", "settings it reads: default"],
                [[method.name, method.description, settings(method)] for method in METHODS], justify="left")
    out.print("stop_epoch defaults to the planned length (75% of it for rigl); gmp prunes until 75% of it",
              soft_wrap=True)


def cells() -> None:
    """The recurrent cell types (train --cell NAME), each with its one-line description."""
    from sparsernn.models.cells import CELLS

    print_table("cell types (sparsernn train --cell NAME)", ["cell", "what it is", "gates"],
                [[cell.name, cell.description, " ".join(cell.gates)] for cell in CELLS], justify="left")
