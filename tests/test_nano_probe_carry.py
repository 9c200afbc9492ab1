"""The nano recipe's carry probe (train/recipes/nano/probe_carry.py): ridge probes that tell a linear read-out from
noise, and attention masses that respect which token sets contain which."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trl")

from stvgr1_edge_train.recipes.nano.probe_carry import probe_carry, ridge_r2


def test_ridge_r2_reads_a_linear_target_and_not_noise():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, 8))
    linear = features @ rng.normal(size=8) + 0.05 * rng.normal(size=120)
    assert ridge_r2(features, linear) > 0.95
    assert ridge_r2(features, rng.normal(size=120)) < 0.2
    with pytest.raises(ValueError, match="too few"):
        ridge_r2(features[:5], linear[:5])


def test_probe_reports_the_heads_masses_and_the_probes_on_a_saved_model(saved_tiny):
    report = probe_carry(saved_tiny.folder, clips=10, distractors=2, layer=1, head=0)
    masses = report["attention"]
    assert set(masses) == {"edge", "target", "distractors"}
    assert all(0.0 <= m <= 1.0 for m in masses.values())
    # the edge tubes' target tokens are a subset of the target's tokens, which share none with the distractors'
    assert 0.0 < masses["edge"] <= masses["target"] + 1e-6
    assert masses["target"] + masses["distractors"] <= 1.0 + 1e-6
    for name in ("before", "after", "last"):
        assert set(report[name]) == {"start_beyond_length", "start", "length"}
        assert all(r2 <= 1.0 for r2 in report[name].values())
    assert report["clock_r2"] <= 1.0 and report["clips"] == 10


@pytest.mark.parametrize(
    ("argv", "says"), [(["/no/such/model"], "model folder not found"), (["/no/such/model", "--clips", "3"], "too few")]
)
def test_bad_input_is_one_line_and_exit_code_2(argv, says, capsys, tmp_path):
    from stvgr1_edge_train.recipes.nano.probe_carry import main

    out = tmp_path / "carry.json"
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--out", str(out)])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and "\n" not in err
    assert not out.exists()
