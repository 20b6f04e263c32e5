"""Mechanisms layer: what is measured inside a ranker (patching, ablation, probes, circuits, neuron attributions and
the pruning study), on ``models`` and ``data``."""
