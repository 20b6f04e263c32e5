"""TFC1 holds: adding a query term to a document raises its score, as a rate over real pairs."""

import pytest

from irmechtest.compliance import measure_axiom, to_verdict


@pytest.mark.irmech_property("tfc1", quantity="compliance rate")
def test_tfc1_holds(ranker, irmech_settings, irmech_verdict):
    settings = irmech_settings
    result, _ = measure_axiom(
        ranker,
        "TFC1",
        settings["pairs"],
        tie_band=settings["tie_band"],
        limit=settings["n_pairs"],
        seed=settings["seed"],
    )
    irmech_verdict(to_verdict(result, ranker.name, settings["threshold"], property="tfc1"))
