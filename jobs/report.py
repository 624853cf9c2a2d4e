"""``msc report OUT``: the report page of an ``msc infer`` output directory (see :mod:`msc_core.report`).

``msc infer`` writes ``OUT/report.html`` at the end of every run; this command
writes it again, for example with the timelines of the files a pattern picks
(``--files '*/interviews/*'``) or a larger sample. No Ray, no model.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``msc report``."""
    from msc_core.report import REPORT_LIMITS

    parser = subparsers.add_parser(
        "report", help="write the HTML report of an msc infer output directory",
        description="Write one self-contained HTML page (no network needed to view it) about an msc infer output "
                    "directory: totals per class, confidence distribution, failed files and their reasons, the "
                    "least certain files and timelines of a sample of files. Its size does not grow with the "
                    "archive.")
    parser.add_argument("out", metavar="OUT", help="output directory of msc infer (local path or URI)")
    parser.add_argument("--files", metavar="PATTERN",
                        help=f"glob over full paths: timelines of these files too (at most "
                             f"{REPORT_LIMITS['matched']}), e.g. '*/interviews/*'")
    parser.add_argument("--sample", type=int, default=REPORT_LIMITS["sample"],
                        help=f"files in the stable timeline sample (default {REPORT_LIMITS['sample']})")
    parser.add_argument("--html", metavar="PATH", help="where to write the page (default OUT/report.html)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``msc report``."""
    from jobs.console import summary
    from msc_core.report import write_report

    summary(f"msc report: wrote {write_report(args.out, files=args.files, sample=args.sample, html_path=args.html)}")
    return 0
