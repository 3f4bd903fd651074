"""Errors of models and their files, in a module that imports nothing heavy (serving reads it)."""


class ModelFileError(ValueError):
    """A model file that is missing, corrupt, or not an agedistill model of a known kind."""


def check_stage(stage: int, n_stages: int) -> None:
    """Raise ``IndexError`` unless ``stage`` is one of a network's ``n_stages`` stages."""
    if not 0 <= stage < n_stages:
        raise IndexError(f"stage {stage}: the network has {n_stages} stages (0-{n_stages - 1})")
