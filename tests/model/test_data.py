from __future__ import annotations

import pytest

from model.data import LEGACY_COMPETITION_ID, MAX_COMMITMENT_BYTES, ModelId, max_repo_chars

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HASH = "Xb4c7bJ1q6h0vG4mV3xC2uYz9wP8sK5dF1gH2jK3lM4="


def test_round_trip_all_fields() -> None:
    model_id = ModelId(namespace="alice", name="llama-ft", commit=COMMIT, hash=HASH, competition_id="l3")
    text = model_id.to_compressed_str()
    assert text == f"alice:llama-ft:{COMMIT}:{HASH}:l3"
    assert ModelId.from_compressed_str(text) == model_id


def test_missing_fields_are_written_as_none() -> None:
    model_id = ModelId(namespace="alice", name="m")
    assert model_id.to_compressed_str() == "alice:m:None:None:None"
    assert ModelId.from_compressed_str("alice:m:None:None:None") == model_id


def test_legacy_four_fields_belong_to_m1() -> None:
    parsed = ModelId.from_compressed_str(f"bob:model:{COMMIT}:{HASH}")
    assert parsed.competition_id == LEGACY_COMPETITION_ID == "m1"
    assert parsed.commit == COMMIT and parsed.hash == HASH


def test_model_id_is_frozen() -> None:
    model_id = ModelId(namespace="a", name="b")
    with pytest.raises(AttributeError):
        model_id.name = "c"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "just-one-field",
        "a:b:c",
        "a:b:c:d:e:f",
        "None:name:c:h:l3",
        "ns:None:c:h:l3",
        ":name:c:h:l3",
        "../etc:name:c:h:l3",
        "ns:..:c:h:l3",
        "ns:na/me:c:h:l3",
        "ns:name:../../x:h:l3",
        "ns:name:c:h:l 3",
        "ns:na--me:c:h:l3",
        "ns:name.:c:h:l3",
        "ns:name:c:h:" + "x" * 40,
        "a:b:" + "c" * 130,
        "ns:n\u00e4me:c:h:l3",
    ],
)
def test_malformed_strings_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        ModelId.from_compressed_str(text)


@pytest.mark.parametrize("value", [None, 5, b"a:b:c:d:e", ["a"]])
def test_non_text_raises_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        ModelId.from_compressed_str(value)  # type: ignore[arg-type]


def test_too_long_commitment_is_refused_before_committing() -> None:
    # 40-char commit + 44-char hash + 2-char competition leave 128 - 90 = 38 chars for the repo
    fits = ModelId(namespace="n" * 19, name="m" * 19, commit=COMMIT, hash=HASH, competition_id="l3")
    assert max_repo_chars(fits) == 38
    assert len(fits.to_compressed_str().encode()) == MAX_COMMITMENT_BYTES
    too_long = ModelId(namespace="n" * 20, name="m" * 19, commit=COMMIT, hash=HASH, competition_id="l3")
    with pytest.raises(ValueError, match="38 characters"):
        too_long.to_compressed_str()


def test_invalid_fields_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        ModelId(namespace="", name="x")
    with pytest.raises(ValueError):
        ModelId(namespace="a", name="b", commit="None")


def test_a_commit_of_dot_is_refused() -> None:
    for commit in (".", "..", "a..b"):
        with pytest.raises(ValueError):
            ModelId("ns", "name", commit, "h=", "l3")
    with pytest.raises(ValueError):
        ModelId.from_compressed_str("ns:name:.:h=:l3")
    assert ModelId("ns", "name", "v1.0", "h=", "l3").commit == "v1.0"


def test_every_parsed_legacy_commitment_can_be_written_back() -> None:
    commit, model_hash = "a" * 40, "b" * 43 + "="
    longest = "n" * (MAX_COMMITMENT_BYTES - 3 - len(commit) - len(model_hash))
    legacy = f"{longest[:20]}:{longest[20:]}:{commit}:{model_hash}"
    assert len(legacy) == MAX_COMMITMENT_BYTES
    parsed = ModelId.from_compressed_str(legacy)
    assert parsed.competition_id == LEGACY_COMPETITION_ID
    assert parsed.to_compressed_str() == legacy  # 4 fields again: not 131 bytes
    assert ModelId.from_compressed_str(parsed.to_compressed_str()) == parsed
    assert max_repo_chars(parsed) == len(longest)
    five = ModelId.from_compressed_str(f"ns:name:{commit}:{model_hash}:m1")
    assert five.to_compressed_str() == f"ns:name:{commit}:{model_hash}"
