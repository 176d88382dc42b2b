"""Figures: plotly builders, one per analysis (:mod:`.builders`), their export to files (:mod:`.export`),
and the registry of figures (:mod:`.registry`) from which the ``figure`` command, the ``report`` and
the pages' downloads are generated."""
from .builders import *  # noqa: F401,F403  (the builders, by name: conflict_figure, ...)
from .builders import PALETTE, params_text, tsv_default_layer  # noqa: F401
from .export import FORMATS, STYLES, caption_of, chromium, figure_bytes, save_figure, styled  # noqa: F401
from .registry import FIGURES, build_figure  # noqa: F401
