"""Reports: CSV tables, PNG plots and one self-contained ``report.html`` from ``results.json``.

The report reads results, never models: ``write_report(out_dir)`` can be re-run on any
results folder.
"""
from vlground.report.writer import write_report

__all__ = ["write_report"]
