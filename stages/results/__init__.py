"""Results: what a run and its evaluation mean, apart from how they are rendered: the row model, compare, the quality
gate, the PR comment, subset planning and sizing; renderers that only render."""
