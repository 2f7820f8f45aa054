"""Analysis of a sweep's MLflow records: leaderboard, export, confirmation, plots, report.

Reads only what `search/` records (docs/contracts.md) and retrains through
`trainables`; `python -m analysis --help` lists the commands.
"""
