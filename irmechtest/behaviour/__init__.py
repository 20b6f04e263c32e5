"""Behaviour layer: an axiom's compliance for any scorer (rates, tie bands, the random-twin comparison) and the
Hypothesis strategies that search for violations; on ``data`` and ``stats``, above them because it scores."""
