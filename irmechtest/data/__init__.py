"""Data layer: text sources and IDF tables, the axiom catalogue, minimal-pair construction and Hypothesis strategies.
Needs no model."""
