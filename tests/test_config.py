import pytest

from srlm.run.config import Config, ConfigError, describe, load_config, packaged_config, packaged_names, save_config


def test_paper_defaults():
    c = Config()
    assert (c.sample.n, c.sample.temperature, c.sample.top_p, c.judge.k) == (4, 0.7, 0.9, 3)
    assert (c.dpo.beta, c.dpo.learning_rate, c.dpo.final_learning_rate, c.dpo.batch_size) == (0.1, 1e-6, 1e-7, 16)
    assert c.dpo.init == "anchor" and c.prompts.few_shot == 8 and c.judge.scoring == "parsed"


def test_no_config_means_the_packaged_default():
    assert load_config(None) == load_config("default") == load_config(packaged_config("default"))
    assert load_config(None) != Config()  # the CPU default departs from the paper's GPU recipe


def test_overrides_and_roundtrip(tmp_path):
    c = load_config(None, ["sample.n=6", "dpo.learning_rate=2e-4", "dpo.lora=true", "data.ift=[a.jsonl, b.jsonl]",
                           "prompts.file=x.jsonl", "output_dir=out", "backend.served_model=1.5", "data.eft=one.jsonl"])
    assert c.sample.n == 6 and c.dpo.learning_rate == 2e-4 and c.dpo.lora is True
    assert c.data.ift == ["a.jsonl", "b.jsonl"] and c.output_dir == "out" and c.data.eft == ["one.jsonl"]
    assert c.backend.served_model == "1.5"
    path = tmp_path / "c.yaml"
    save_config(c, str(path))
    assert load_config(str(path)) == c


@pytest.mark.parametrize("override,msg", [
    ("sample.nn=3", "unknown key"),
    ("nosuch.n=3", "unknown section"),
    ("sample.n=four", r"sample.n = 'four': Input should be a valid integer"),
    ("sample.n=2.5", r"sample.n = 2.5: Input should be a valid integer, got a number with a fractional part"),
    ("sample.n=1", r"sample.n = 1: Input should be greater than or equal to 2"),
    ("dpo.beta=-1", r"dpo.beta = -1: Input should be greater than 0"),
    ("sample.top_p=0", r"sample.top_p = 0: Input should be greater than 0"),
    ("sample.top_p=1.5", r"sample.top_p = 1.5: Input should be less than or equal to 1"),
    ("sample.temperature=-0.1", r"Input should be greater than or equal to 0"),
    ("dpo.learning_rate=0", r"dpo.learning_rate = 0: Input should be greater than 0"),
    ("dpo.init=middle", r"dpo.init = 'middle': Input should be 'anchor' or 'previous'"),
    ("judge.scoring=maybe", r"Input should be 'parsed' or 'expected'"),
    ("sft.per_device_batch_size=3", "sft.batch_size \\(8\\) must be a multiple of sft.per_device_batch_size \\(3\\)"),
    ("novalue", "not key=value"),
    ("sample=3", "is a section"),
])
def test_bad_overrides(override, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        load_config(None, [override])
    if "=" in override and "." in override.split("=")[0] and "unknown" not in msg and "multiple" not in msg:
        assert f"override '{override}'" in str(e.value)  # names where the bad value came from


def test_bad_files_name_file_line_key_value(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "none.yaml"))
    p = tmp_path / "bad.yaml"
    p.write_text("seed: 1\nsample:\n  bogus: 1\n  n: 2.5\ndpo:\n  beta: -1\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    msg = str(e.value)
    # Every problem in one error, each with its file:line.
    assert f"{p}:3: unknown key 'sample.bogus'" in msg
    assert f"{p}:4: sample.n = 2.5" in msg
    assert f"{p}:6: dpo.beta = -1: Input should be greater than 0" in msg
    p.write_bytes(b"seed: 1\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8 text \\(byte 13\\)"):
        load_config(str(p))
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(str(p))


def test_assignment_is_checked():
    c = Config()
    with pytest.raises(Exception):
        c.sample.n = 0


def test_packaged_configs_load():
    names = packaged_names()
    assert {"default", "tiny", "gpu-qwen2.5-7b"} <= set(names)
    for name in names:
        load_config(name)


def test_every_field_has_help():
    rows = describe()
    assert len(rows) > 60
    assert all(help_text for _, _, help_text in rows)


def test_report_to_reaches_the_trainer_arguments():
    from srlm.engines.training import trainer_kwargs

    cfg = load_config(None, ["dpo.report_to=[tensorboard]"])
    assert trainer_kwargs(cfg, cfg.dpo, "ckpt")["report_to"] == ["tensorboard"]
    assert trainer_kwargs(cfg, cfg.sft, "ckpt")["report_to"] == "none"
