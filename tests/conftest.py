import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from tiny import make_tiny_model, tiny_overrides, write_seed_files  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return make_tiny_model(str(tmp_path_factory.mktemp("tiny") / "m0"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture
def tiny_run_args(tmp_path, tiny_model):
    ift, eft, template = write_seed_files(str(tmp_path))
    return tiny_overrides(str(tmp_path), tiny_model, ift, eft, template)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model) -> str:
    """One complete uninterrupted loop (SFT + 2 iterations) on the tiny model, shared by the
    end-to-end, resume and report tests."""
    from srlm.cli import main

    root = str(tmp_path_factory.mktemp("tinyrun"))
    ift, eft, template = write_seed_files(root)
    assert main(["run", "--config", "tiny", *tiny_overrides(root, tiny_model, ift, eft, template)]) == 0
    return os.path.join(root, "run")
