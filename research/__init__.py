"""Research grids and probes (python -m research.NAME); agedistill and stages never import it."""
