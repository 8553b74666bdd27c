"""The studies of the workflow, one module each (see :mod:`kd_core.studies.base`).

Every module of this package but ``base`` defines one :class:`~kd_core.studies.base.Study`
subclass; importing the package imports them all, and :data:`STUDIES` lists them in their order
(``Study.order``). A new study is a new module here, its rules file ``rules/<key>.smk``, its
schema section and its tests; the plan, the checks, the Snakefile and the paper find it here.
"""

from __future__ import annotations

import importlib
import pkgutil

from kd_core.studies.base import PaperTable, Study

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

#: config key -> study class, in the order of their models, tables and figures
STUDIES: dict[str, type[Study]] = dict(sorted(Study.registry.items(), key=lambda kv: kv[1].order))

__all__ = ["STUDIES", "PaperTable", "Study"]
