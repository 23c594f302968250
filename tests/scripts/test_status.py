"""finetune-status on the local network: every uid with its commitment, model, incentive and the
weights the validator last set (its state file) and the chain holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.data import ModelId
from model.network import local_wallet
from model.storage.chain.local_chain import LocalChain
from neurons import status


def test_status_of_the_local_network(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net"
    net.mkdir()
    validator = local_wallet(net / "wallets", "validator", "default").hotkey.ss58_address
    miners = [local_wallet(net / "wallets", f"m{i}", "default").hotkey.ss58_address for i in range(3)]
    chain = LocalChain(net / "chain.sqlite")
    chain.register(validator, stake=1000.0, validator_permit=True)
    for hotkey in miners:
        chain.register(hotkey)
    model = ModelId(namespace="m0", name="tiny", commit="a" * 40, hash="h" * 44, competition_id="local")
    LocalChain(net / "chain.sqlite", hotkey=miners[0]).commit(model.to_compressed_str())
    LocalChain(net / "chain.sqlite", hotkey=miners[1]).commit("garbage")
    LocalChain(net / "chain.sqlite", hotkey=validator).set_weights([1, 2], [0.75, 0.25], version_key=1)
    state = tmp_path / "state"
    state.mkdir()
    (state / "validator_state.json").write_text(
        json.dumps({"last_weights_block": 42, "last_weights": {"1": 0.75, "2": 0.25}})
    )
    argv = ["--localnet", str(net), "--wallet.name", "validator", "--state_dir", str(state)]
    assert status.main([*argv, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["weights_sent_at_block"] == 42
    rows = {row["uid"]: row for row in shown["uids"]}
    assert sorted(rows) == [0, 1, 2, 3]
    assert rows[0]["validator_permit"] and rows[0]["stake"] == 1000.0 and rows[0]["commitment"] is None
    assert rows[1]["model"] == "m0/tiny@aaaaaaaa" and rows[1]["competition"] == "local"
    assert rows[1]["commit_block"] is not None and rows[1]["weight_sent"] == 0.75
    assert rows[1]["weight_on_chain"] == pytest.approx(0.75) and rows[3]["weight_on_chain"] == 0.0
    assert rows[2]["model"].startswith("(not a model") and rows[3]["weight_sent"] is None
    assert 0.99 < sum(row["incentive"] for row in shown["uids"]) < 1.01
    # the table has the same facts; without the validator's wallet there is no on-chain column
    assert status.main(argv) == 0
    table = capsys.readouterr().out
    assert "m0/tiny@aaaaaaaa" in table and "block 42" in table and "weight on chain" in table
    assert status.main(["--localnet", str(net), "--state_dir", str(tmp_path / "none")]) == 0
    table = capsys.readouterr().out
    assert "weight on chain" not in table and "none found" in table
    assert not (net / "wallets" / "default").exists()  # a status never creates a wallet
