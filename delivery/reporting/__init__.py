"""The report an auditor or a campaign lead reads at a glance: PDF, HTML, CSV or JSON.

:mod:`~delivery.reporting.data` reads the store, :mod:`~delivery.reporting.charts` draws
inline SVG, :mod:`~delivery.reporting.render` writes the formats.
"""

from delivery.reporting.data import Report, Scope, build_report
from delivery.reporting.render import FORMATS, Written, write_report

__all__ = ["FORMATS", "Report", "Scope", "Written", "build_report", "write_report"]
