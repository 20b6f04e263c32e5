"""TFC1 holds: inserting a query term into a document raises its score more than inserting an unrelated word
of the same token length does, as a rate over real pairs with the paired contrast's interval."""

import pytest

from irmechtest.behaviour.compliance import measure_axiom, to_verdict, wants_twin


@pytest.mark.irmech_property("tfc1")
def test_tfc1_holds(ranker, ranker_twin, irmech_settings, irmech_verdict):
    settings = irmech_settings
    result, _ = measure_axiom(
        ranker,
        "TFC1",
        settings["pairs"],
        tie_band=settings["tie_band"],
        limit=settings["n_pairs"],
        seed=settings["seed"],
        twin=ranker_twin() if wants_twin(settings["random_twin"], ranker.kind) else None,
    )
    irmech_verdict(to_verdict(result, ranker.name, settings["threshold"], property="tfc1"))
