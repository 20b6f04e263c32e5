"""Report layer: ``Verdict``, the run's fingerprint and release gate, the HTML report and atomic output writing."""
