"""Test-set scores, plots, cost. May import: config, models, data, serving.inference."""
