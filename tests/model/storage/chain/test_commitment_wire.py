"""The bytes a commit puts on the wire, pinned: the adapter's ``set_commitment`` call, encoded by the
SDK's codec with the subtensor runtime's real metadata, equals SCALE written out by hand."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import bittensor as bt
import pytest
from bittensor._transport.codec import RuntimeCodec

from model.storage.chain.bittensor_chain import BittensorChain
from model.storage.chain.sdk_runner import SdkRunner
from tests.fakes.fake_substrate import FakeSubstrate

METADATA = Path(__file__).parents[3] / "fakes" / "data" / "subtensor_metadata_v15.scale.gz"
COMMITMENTS_PALLET = 18  # index of pallet_commitments in the subtensor runtime
SET_COMMITMENT = 0  # its first call


@pytest.fixture(scope="module")
def codec() -> RuntimeCodec:
    return RuntimeCodec(gzip.decompress(METADATA.read_bytes()), spec_version=300, transaction_version=1)


@pytest.fixture
def committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[FakeSubstrate, BittensorChain]]:
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))
    wallet = bt.Wallet("cold", "hot", path=str(tmp_path / "wallets"))
    wallet.regenerate_hotkey(seed="0x" + "22" * 32, use_password=False, overwrite=True, suppress=True)
    fake = FakeSubstrate(block=100)
    runner = SdkRunner(bt.Client("finney", substrate=fake))
    yield fake, BittensorChain(runner, netuid=6, signer=wallet.hotkey)
    runner.close()


def by_hand(netuid: int, data: bytes) -> bytes:
    """SCALE of ``Commitments.set_commitment(netuid, CommitmentInfo { fields: [Data::Raw<n>(data)] })``."""
    assert 1 <= len(data) <= 128
    return (
        bytes([COMMITMENTS_PALLET, SET_COMMITMENT])  # call index: pallet, call
        + netuid.to_bytes(2, "little")  # netuid: u16
        + bytes([1 << 2])  # fields: BoundedVec, compact length 1
        + bytes([len(data) + 1])  # Data::Raw<n> is variant n + 1 (variant 0 is Data::None)
        + data  # the n bytes, no length prefix: the variant carries it
    )


@pytest.mark.parametrize(
    "model_id",
    [
        "ns:name:c:h:m1",
        # a full-length commitment: 40-char commit, 44-char base64 hash
        "alice:finetuned-llama:" + "0123456789abcdef" * 2 + "01234567:" + "A" * 43 + "=:l3",
        "x" * 128,  # the longest a Raw field holds
    ],
)
def test_set_commitment_wire_bytes(
    codec: RuntimeCodec, committed: tuple[FakeSubstrate, BittensorChain], model_id: str
) -> None:
    fake, chain = committed
    chain.commit(model_id)
    (composed,) = fake.composed
    wire = RuntimeCodec.call_data(codec.compose_call(composed.module, composed.function, composed.params))
    assert wire == by_hand(6, model_id.encode())
    # and the runtime decodes it back to the same commitment
    decoded = codec.decode_call(wire)
    assert (decoded["call_module"], decoded["call_function"]) == ("Commitments", "set_commitment")
    args = {arg["name"]: arg["value"] for arg in decoded["call_args"]}
    raw = model_id.encode()
    assert args == {"netuid": 6, "info": {"fields": [{f"Raw{len(raw)}": "0x" + raw.hex()}]}}


def test_the_codec_refuses_a_field_longer_than_the_runtime_allows(codec: RuntimeCodec) -> None:
    with pytest.raises(ValueError, match="Raw129"):
        codec.compose_call(
            "Commitments", "set_commitment", {"netuid": 6, "info": {"fields": [{"Raw129": b"x" * 129}]}}
        )
