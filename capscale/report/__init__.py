"""Reports: a folder with index.html, PNG plots and CSV tables, readable offline.

    >>> from capscale.report import build_report
    >>> build_report("runs/my-sweep/runs.csv", "report/")      # or a fit JSON, or builtin:quest

:class:`Report` composes pages from sections (text, figures, tables); the standard sections of
a fitted runs table are in :func:`add_standard_sections`.
"""

from capscale.report.build import add_standard_sections, build_report, fit_laws, primary_fit
from capscale.report.html import Report

__all__ = ["Report", "add_standard_sections", "build_report", "fit_laws", "primary_fit"]
