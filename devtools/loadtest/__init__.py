"""``tally load-test``: drive a running suite through the real ingestion path and report.

Needs the optional extra ``loadtest`` (matplotlib for the plots, tqdm for the
progress bar), which ``make`` installs.
"""
