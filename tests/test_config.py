"""Configuration: profiles, per-property and per-model overrides, and validation with clear errors."""

import pytest

from irmechtest.config import (
    ConfigError,
    check_value,
    load_configuration,
    parse_configuration,
    property_config,
)
from irmechtest.registry import PROPERTIES


def test_full_profile_uses_paper_scale_samples():
    assert property_config("tfc1")["n_pairs"] < property_config("tfc1", profile="full")["n_pairs"] == 400
    assert property_config("axiom-tfc2", profile="full")["n_pairs"] == 400


def test_every_default_and_full_profile_value_passes_its_own_validation():
    for name, prop in PROPERTIES.items():
        for key, value in {**prop.settings, **prop.full_profile}.items():
            check_value(name, key, value, f"defaults of {name}")


def test_layers_resolve_from_general_to_model_and_profile():
    config = parse_configuration(
        {
            "properties": {"tfc1": {"threshold": 0.8, "n_pairs": 50}},
            "profiles": {"full": {"properties": {"tfc1": {"n_pairs": 300}}}},
            "models": {"org/model": {"properties": {"tfc1": {"threshold": 0.7}}}},
        },
        "pyproject.toml",
    )
    assert config.settings("tfc1")["threshold"] == 0.8
    assert config.settings("tfc1", ["other"], "quick")["n_pairs"] == 50
    model_full = config.settings("tfc1", ["org/model"], "full")
    assert (model_full["threshold"], model_full["n_pairs"]) == (0.7, 300)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"properties": {"tfc9": {}}}, "[tool.irmechtest.properties.tfc9]: unknown property 'tfc9'"),
        ({"properties": {"tfc1": {"nope": 1}}}, "property 'tfc1' has no setting 'nope'"),
        ({"properties": {"tfc1": {"n_pairs": -5}}}, "n_pairs must be at least 1, got -5"),
        ({"properties": {"tfc1": {"seed": -1}}}, "seed must be at least 0"),
        ({"properties": {"tfc1": {"threshold": 1.5}}}, "threshold must be between 0 and 1, got 1.5"),
        ({"properties": {"tfc1": {"threshold": "high"}}}, "threshold must be int or float, got 'high'"),
        ({"properties": {"contextualisation-heads": {"threshold": -1}}}, "threshold must be at least 0, got -1"),
        ({"properties": {"contextualisation-heads": {"threshold": 1.5}}}, "threshold must be int, got 1.5"),
        ({"properties": {"tfc1": {"n_pairs": 2.5}}}, "n_pairs must be int, got 2.5"),
        ({"properties": {"tfc1": {"n_pairs": True}}}, "n_pairs must be int, got True"),
        ({"properties": {"tfc1": {"tie_band": float("nan")}}}, "tie_band must be finite"),
        ({"properties": {"tfc1": {"tie_band": "wide"}}}, "tie_band must be one of calibrate, control, got 'wide'"),
        ({"properties": {"axiom-tdc": {"random_twin": "yes"}}}, "random_twin must be one of auto, always, never"),
        ({"properties": {"nig-pruning": {"exclude_queries": "1037798"}}}, "exclude_queries must be list, got '1037"),
        (
            {"properties": {"nig-pruning": {"exclude_queries": ["19335", 1.5]}}},
            "exclude_queries must be a list of query ids (strings or integers), got 1.5",
        ),
        ({"properties": {"nig-pruning": {"pairs": "held-out.tsv"}}}, "pairs file 'held-out.tsv' not found"),
        ({"properties": {"tfc1": 3}}, "[tool.irmechtest.properties.tfc1] must be a table"),
        ({"thresholds": {}}, "[tool.irmechtest]: unknown key 'thresholds'"),
        ({"profile": "slow"}, "profile must be one of quick, full, got 'slow'"),
        ({"profiles": {"slow": {}}}, "unknown profile 'slow'"),
        (
            {"models": {"org/m": {"properties": {"idf-in-u0": {"top_k": 0}}}}},
            '[tool.irmechtest.models."org/m".properties.idf-in-u0]: top_k must be at least 1, got 0',
        ),
    ],
)
def test_invalid_values_are_refused_naming_file_and_key(table, message):
    with pytest.raises(ConfigError) as error:
        parse_configuration(table, "/repo/pyproject.toml")
    assert str(error.value).startswith("/repo/pyproject.toml: ")
    assert message in str(error.value)


def test_excluded_query_ids_are_strings_whichever_way_toml_writes_them():
    table = {"properties": {"nig-pruning": {"exclude_queries": [1037798, "19335"]}}}
    config = parse_configuration(table, "/repo/pyproject.toml")
    assert config.settings("nig-pruning")["exclude_queries"] == ["1037798", "19335"]


def test_a_count_threshold_is_not_a_rate():
    """contextualisation-heads counts heads (seed 002 finds two): 2 is a valid threshold there, not above 1."""
    config = parse_configuration({"properties": {"contextualisation-heads": {"threshold": 2}}}, "/repo/pyproject.toml")
    assert config.settings("contextualisation-heads")["threshold"] == 2


def test_files(tmp_path):
    assert load_configuration(tmp_path / "pyproject.toml", required=False).profile == "quick"
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_configuration(tmp_path / "missing.toml", required=True)
    (tmp_path / "bad.toml").write_text("[tool.irmechtest\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_configuration(tmp_path / "bad.toml", required=False)
    (tmp_path / "other.toml").write_text("[tool.black]\n")
    with pytest.raises(ConfigError, match=r"no \[tool.irmechtest\] table"):
        load_configuration(tmp_path / "other.toml", required=True)
    (tmp_path / "ok.toml").write_text(
        '[tool.irmechtest]\nprofile = "full"\n[tool.irmechtest.properties.tfc1]\nseed = 3\n'
    )
    config = load_configuration(tmp_path / "ok.toml", required=True)
    assert (config.profile, config.settings("tfc1")["seed"], config.settings("tfc1")["n_pairs"]) == ("full", 3, 400)


def test_relative_pair_files_resolve_against_the_configuration_file(tmp_path, monkeypatch):
    """Issue 14 case 10: a relative ``pairs`` path resolved against the working directory, not the file."""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "pairs.tsv").write_text("qid\tdocno\tquery\ttext\nq\td\tcats\tcats purr\n")
    (project / "pyproject.toml").write_text('[tool.irmechtest.properties.tfc1]\npairs = "data/pairs.tsv"\n')
    monkeypatch.chdir(tmp_path)  # pytest started elsewhere, e.g. from a parent folder with --irmech-config
    config = load_configuration(project / "pyproject.toml", required=True)
    assert config.settings("tfc1")["pairs"] == str(project.resolve() / "data" / "pairs.tsv")
    (project / "pyproject.toml").write_text('[tool.irmechtest.properties.tfc1]\npairs = "data/missing.tsv"\n')
    with pytest.raises(ConfigError, match=r"pairs file 'data/missing.tsv' not found \(looked at .*project/data"):
        load_configuration(project / "pyproject.toml", required=True)


def test_per_model_keys_must_match_a_model_of_the_run():
    """Issue 14 case 6: a mistyped model key silently dropped its per-model threshold."""
    config = parse_configuration(
        {"models": {"org/modle": {"properties": {"tfc1": {"threshold": 0.7}}}}}, "/repo/pyproject.toml"
    )
    with pytest.raises(ConfigError) as error:
        config.check_models({"org/model": "org/model"})
    assert str(error.value) == (
        '/repo/pyproject.toml: [tool.irmechtest.models."org/modle"] matches no --model of this run '
        "(models: org/model); did you mean 'org/model'?"
    )
    config.check_models({"org/model": "org/model", "org/modle": "org/modle"})
    # The loaded ranker's name counts too: the alias "minilm" loads as all-MiniLM-L6-v2.
    parse_configuration({"models": {"all-MiniLM-L6-v2": {}}}, "p").check_models({"minilm": "all-MiniLM-L6-v2"})


def test_required_properties_are_known_names():
    assert parse_configuration({"required": ["tfc1"]}, "p").required == ("tfc1",)
    with pytest.raises(ConfigError, match="required: unknown property 'tfc9'"):
        parse_configuration({"required": ["tfc9"]}, "p")
    with pytest.raises(ConfigError, match="required must be a list of property names"):
        parse_configuration({"required": "tfc1"}, "p")
