"""Training recipes, loop, losses, resume. May import config, models, data, faces, pipeline."""
