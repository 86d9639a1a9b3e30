"""The packaged method configs run from the same M1 and are evaluated the same way as `default`:
side-by-side comparisons (issue 10) rely on it, so a change to default.yaml must reach them."""

import pytest

from srlm.run.config import load_config, to_dict

SHARED = ("seed", "model", "data", "sft", "eft_build", "eval", "backend", "judge")


@pytest.mark.parametrize("name, extra_same", [
    ("cream", ("prompts", "sample", "pairs")),
    ("scir", ("prompts", "sample", "pairs", "dpo")),
    ("spin", ()),
    ("dno", ("prompts", "sample", "pairs")),
    ("dpo-human", ()),
    ("rlhf", ()),
])
def test_method_config_matches_default(name, extra_same):
    default, cfg = to_dict(load_config("default")), to_dict(load_config(name))
    for key in SHARED + extra_same:
        assert cfg[key] == default[key], f"{name}.yaml differs from default.yaml in {key}"
    # DPO hyper-parameters too, but for the start model (SPIN and CREAM train M_{t+1} from M_t).
    assert {k: v for k, v in cfg["dpo"].items() if k != "init"} == {k: v for k, v in default["dpo"].items()
                                                                     if k != "init"}
    assert cfg["method"] == name.replace("-", "_")
