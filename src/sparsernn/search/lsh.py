"""Where ``Search`` and ``SearchSettings`` were defined before the search became a package of parts;
both are importable from here still (they live in ``driver.py`` and ``settings.py``)."""

from sparsernn.search.driver import Search
from sparsernn.search.settings import SearchSettings
from sparsernn.search.study import seed_for as _seed

__all__ = ["Search", "SearchSettings", "_seed"]
