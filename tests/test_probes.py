"""U0 causal editing (seed 002 sec. 4.4): monotone and specific on the planted model, not on its twin."""

import numpy as np
import pytest

from irmechtest.controls.twins import planted_ranker, random_cross_encoder
from irmechtest.mechanisms.circuits import probe_text
from irmechtest.mechanisms.probes import idf_direction, u0_edit_probe


def probe(ranker, n=12):
    text = probe_text(ranker, n, 0)
    return u0_edit_probe(ranker, [p.query for p in text.pairs], text.idf)


def test_editing_u0_raises_the_edited_tokens_document_on_the_planted_model():
    ranker = planted_ranker()
    result = probe(ranker)
    assert result.mean_rho > 0.95
    assert result.specific and result.mean_rho_other < result.mean_rho
    # U0 moves the document more than all 19 random word directions (16.4 against at most 2.2): p = 1 / 20.
    assert result.random_p == pytest.approx(0.05) and result.change > 5 * np.abs(result.random_change).max()
    # The oriented direction is the planted IDF direction.
    direction = idf_direction(ranker.W_E, probe_text(ranker, 1, 0).idf)
    assert float(direction.float() @ ranker.truth.idf_direction.float()) > 0.99


def test_the_twin_is_not_monotone_in_idf():
    result = probe(planted_ranker(random=True))
    assert not (result.mean_rho >= 0.8 and result.specific)


def test_random_directions_catch_a_random_model_that_is_monotone_by_chance():
    """A random-init BERT whose score happens to rise along U0 (rho 1.0), and more for the document repeating
    the edited token (it holds more edited copies): monotone and specific, the old rule's pass. Random
    directions of word-embedding variation move it as much, so the property fails."""
    result = probe(random_cross_encoder("bert", seed=0))
    assert result.mean_rho >= 0.8 and result.specific
    assert result.random_p > 0.05


def test_minilm_gives_finite_values(minilm):
    result = probe(minilm, n=4)
    assert np.isfinite(result.edited).all() and np.isfinite(result.mean_rho)


def test_degenerate_inputs_are_refused():
    ranker = planted_ranker()
    idf = probe_text(ranker, 1, 0).idf
    with pytest.raises(ValueError, match="3 scales"):
        u0_edit_probe(ranker, ["car doctor"], idf, scales=(0.0, 1.0))
    with pytest.raises(ValueError, match="n_random"):
        u0_edit_probe(ranker, ["car doctor"], idf, n_random=0)
    with pytest.raises(ValueError, match="two distinct"):
        u0_edit_probe(ranker, ["car", "zzzz qqqq"], idf)
    with pytest.raises(ValueError, match="fewer than 3 tokens"):
        idf_direction(ranker.W_E, np.full(ranker.W_E.shape[0], np.nan))
