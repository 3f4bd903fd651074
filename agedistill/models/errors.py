"""Errors of model files, in a module that imports nothing heavy (the serving path reads it)."""


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, or not an agedistill model of a known kind."""
