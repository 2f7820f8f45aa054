"""The one error the analysis commands report as a single line instead of a traceback."""


class AnalysisError(Exception):
    """Bad input the user can fix: unknown experiment or sweep, nothing finished yet."""
