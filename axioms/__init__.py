"""The built-in irmechtest suite: the test modules ``pytest --model=SPEC`` runs on every model."""
