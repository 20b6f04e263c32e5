"""Shared fixtures of irmechtest's own tests: models are built once per session (they are read-only)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def minilm():
    from irmechtest.loading import load_ranker

    return load_ranker("minilm")


@pytest.fixture(scope="session")
def tokenizer():
    from irmechtest.controls import embedded_tokenizer

    return embedded_tokenizer()
