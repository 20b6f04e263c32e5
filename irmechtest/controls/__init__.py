"""Controls layer: models whose answer is known (random-init twins, the planted-circuit model), built on ``models``
only, so that every verdict can be checked against a model where the truth is known."""
