"""Models layer: TransformerLens-style hooks, the hooked encoder / decoder / encoder-decoder families, the
``HookedRanker`` API and the loading of a Hugging Face checkpoint. Knows nothing of controls, data or properties."""
