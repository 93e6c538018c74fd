"""`polymoo reproduce bkmoo|congrad`: run a paper's suite (or read its runs from MLflow) and write a report
of the paper's public claims: claim, measured value, scale, verdict, with leaderboards and plots.

Split by job:

- `run`: the paper's suite at a scale (`suite_file`, `load_paper_suite`), trained or read back from MLflow
  (`select_runs`), and `reproduce`, the whole command;
- `claims`: the claims of `results/paper/<paper>.yaml` measured against leaderboard tables, with a verdict;
- `report`: leaderboards, plots, separability and verdicts into `results/reproduce/<paper>_<scale>/`
  (report.md, report.json), built in a temporary folder and moved in place only when complete.

The public names are re-exported here, so `from harness.reproduce import reproduce` keeps working.
"""

from harness.reproduce.run import (
    PAPERS,
    REPO,
    SCALES,
    claims_file,
    load_paper_suite,
    reproduce,
    run_or_read,
    select_runs,
    suite_file,
)

__all__ = ["PAPERS", "REPO", "SCALES", "claims_file", "load_paper_suite", "reproduce", "run_or_read", "select_runs",
           "suite_file"]
