import pytest

from srlm.config import Config, ConfigError, describe, load_config, save_config


def test_paper_defaults():
    c = Config()
    assert (c.sample.n, c.sample.temperature, c.sample.top_p, c.judge.k) == (4, 0.7, 0.9, 3)
    assert (c.dpo.beta, c.dpo.learning_rate, c.dpo.final_learning_rate, c.dpo.batch_size) == (0.1, 1e-6, 1e-7, 16)
    assert c.dpo.init == "anchor" and c.prompts.few_shot == 8


def test_overrides_and_roundtrip(tmp_path):
    c = load_config(None, ["sample.n=6", "dpo.learning_rate=2e-4", "dpo.lora=true", "data.ift=[a.jsonl, b.jsonl]",
                           "prompts.file=x.jsonl", "output_dir=out"])
    assert c.sample.n == 6 and c.dpo.learning_rate == 2e-4 and c.dpo.lora is True
    assert c.data.ift == ["a.jsonl", "b.jsonl"] and c.output_dir == "out"
    path = tmp_path / "c.yaml"
    save_config(c, str(path))
    assert load_config(str(path)) == c


@pytest.mark.parametrize("override,msg", [
    ("sample.nn=3", "unknown key"),
    ("nosuch.n=3", "unknown section"),
    ("sample.n=four", "cannot use"),
    ("sample.n=1", "sample.n must be >= 2"),
    ("dpo.init=middle", "dpo.init"),
    ("novalue", "not key=value"),
])
def test_bad_overrides(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "none.yaml"))
    p = tmp_path / "bad.yaml"
    p.write_text("sample:\n  bogus: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.sample: unknown key 'bogus'"):
        load_config(str(p))


def test_packaged_configs_load():
    from srlm.config import packaged_config

    for name in ("default", "tiny", "gpu-qwen2.5-7b"):
        load_config(packaged_config(name))


def test_every_field_has_help():
    rows = describe()
    assert len(rows) > 60
    assert all(help_text for _, _, help_text in rows)
