"""Errors a user can fix: the CLI prints their one-line message and exits 2, without a traceback."""


class UserError(Exception):
    """Bad input (config, path, dataset, checkpoint) explained in one line that names the fix."""
