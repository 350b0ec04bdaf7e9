"""HTML comparison reports: plotly figure dicts (figures), generated explanations (text), the page (page).

``model_report``, ``sweep_report`` and ``accuracy_report`` build a ``Report``; ``write_html`` writes its
page atomically. ``vramplan report`` is the command line; ``vramplan report --rebuild`` regenerates
``reports/``.
"""

from .build import accuracy_report, model_report, sweep_report
from .page import Report, write_html

__all__ = ["Report", "accuracy_report", "model_report", "sweep_report", "write_html"]
