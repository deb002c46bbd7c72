"""benchmarks/ablation_toy.py: the ladder it trains, and that each rung's variant is chosen on the tuning split while
its scores are reported on val."""

import importlib.util
import sys
from pathlib import Path

import pytest

from mixreorg_edge.teacher.model import MixReorgTeacher

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "ablation_toy.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation_toy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_the_ladder_is_the_issues(ablation) -> None:
    names = [arm.name for arm in ablation.ARMS]
    assert names == ["baseline", "baseline-groupvit", "+seg", "+contextual@context0", "+contextual@context1",
                     "+contextual@context2", "+progressive@context1", "full@context1"]
    for arm in ablation.ARMS:  # every arm builds, on the same architecture
        teacher, _ = arm.teacher_config()
        assert teacher.image.stem_centred
        MixReorgTeacher(teacher)
    full, _ = ablation.ARMS[-1].teacher_config()
    assert full.mixing.contextual and full.mixing.progressive and full.mixing.restoration
    assert full.mixing.context_depth == 1


def _row(arm: str, readout: str, seed: int, tune: float, val: float) -> dict:
    return {"rung": "+contextual", "arm": arm, "readout": readout, "seed": seed, "tune_miou": tune, "miou": val,
            "miou_context": 50.0, "steps": 100}


def test_variants_are_chosen_on_the_tuning_split_and_scored_on_val(ablation) -> None:
    rows = [_row("+contextual@context0", "token", seed, tune=40.0, val=60.0) for seed in (0, 1)]
    rows += [_row("+contextual@context1", "token", 0, tune=45.0, val=30.0),
             _row("+contextual@context1", "token", 1, tune=43.0, val=34.0)]
    rows += [_row("+contextual@context1", "group", seed, tune=20.0, val=70.0) for seed in (0, 1)]
    table = {row["for_readout"]: row for row in ablation.summarise(rows)}
    token = table["token"]
    assert token["arm"] == "+contextual@context1"  # best mean tuning score (44), though val (32) says otherwise
    assert token["miou"] == [30.0, 34.0] and token["miou_mean"] == 32.0 and token["miou_spread"] == 4.0
    assert table["group"]["arm"] == "+contextual@context1" and table["chosen"]["readout"] == "token"
