from __future__ import annotations

import json

import pytest

from models.card import ModelCard, is_semver, semver_key, sha256_file
from models.errors import ModelCardError
from tests.models.conftest import make_card


def test_round_trip(tmp_path):
    card = make_card(sha256="a" * 64)
    card.metrics = {"auroc": {"value": 0.9, "data": "held-out"}}
    card.save(tmp_path / "card.json")
    again = ModelCard.load(tmp_path / "card.json")
    assert again == card
    assert again.to_dict() == json.loads((tmp_path / "card.json").read_text())


@pytest.mark.parametrize("field,value", [
    ("name", "Bad Name"), ("version", "1.0"), ("version", "v1.0.0"), ("sha256", "xyz"),
    ("thresholds", {"a": 1.5}), ("thresholds", {"a": float("nan")}), ("classes", ["a", "a"]),
    ("created", "yesterday"), ("training_data", " "), ("outputs", {}),
])
def test_validate_names_the_bad_field(field, value):
    card = make_card(sha256="b" * 64)
    setattr(card, field, value)
    with pytest.raises(ModelCardError) as e:
        card.validate()
    assert e.value.field == field
    assert field in str(e.value)


def test_input_size_must_be_positive_int():
    card = make_card(sha256="b" * 64)
    card.input["size"] = "256"
    with pytest.raises(ModelCardError, match="size") as e:
        card.validate()
    assert e.value.field == "input"


def test_from_dict_missing_and_unknown_fields():
    data = make_card(sha256="c" * 64).to_dict()
    del data["classes"]
    with pytest.raises(ModelCardError, match="classes"):
        ModelCard.from_dict(data)
    data = make_card(sha256="c" * 64).to_dict()
    data["colour"] = "blue"
    with pytest.raises(ModelCardError, match="colour") as e:
        ModelCard.from_dict(data)
    assert e.value.field == "colour"


def test_load_bad_json(tmp_path):
    p = tmp_path / "card.json"
    p.write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        ModelCard.load(p)
    with pytest.raises(ModelCardError, match="cannot read"):
        ModelCard.load(tmp_path / "missing.json")


def test_semver_order():
    versions = ["1.10.0", "1.2.0", "1.2.0-rc.1", "1.2.0-alpha", "1.2.0-alpha.10", "1.2.0-alpha.2", "0.9.9+build.5"]
    assert sorted(versions, key=semver_key) == [
        "0.9.9+build.5", "1.2.0-alpha", "1.2.0-alpha.2", "1.2.0-alpha.10", "1.2.0-rc.1", "1.2.0", "1.10.0"]
    assert is_semver("1.0.0-rc.1+abc") and not is_semver("01.0.0") and not is_semver("1.0")
    with pytest.raises(ValueError):
        semver_key("1.0")


def test_sha256_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
