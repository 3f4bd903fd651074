"""Training: recipes, loop, losses, resume, data-parallel. May import: all but serving, cli."""
