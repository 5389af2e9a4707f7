"""Training configs: paper defaults, strict validation with errors naming the file or flag and the field,
flags over the file, the shipped training/*.yaml, and the CLI's --validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvdata.cli.main import main
from pvdata.errors import ConfigError
from pvdata.training.config import TrainConfig, build_config

REPO = Path(__file__).resolve().parent.parent


def test_defaults_are_the_papers() -> None:
    cfg = TrainConfig()
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.rslora) == (32, 64, 0.0, True)
    assert cfg.lora.target_modules == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    o = cfg.optim
    assert (o.lr, o.schedule, o.warmup_steps, o.batch_size, o.grad_accum, o.epochs, o.weight_decay) == (
        1e-5,
        "linear",
        5,
        2,
        8,
        1,
        0.01,
    )
    assert o.max_steps is None and o.seed == 0
    assert cfg.steering is None and cfg.eval_data is None and cfg.train_on == "all_assistant"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_unknown_field_names_the_file_the_field_and_the_valid_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "model: m\nlora:\n  rank: 8\n")
    with pytest.raises(ConfigError) as err:
        build_config(path)
    msg = str(err.value)
    assert str(path) in msg and "lora.rank" in msg and "valid fields here: r, alpha" in msg


def test_bad_value_in_the_file_names_the_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: -1\n")
    with pytest.raises(ConfigError, match=rf"{path}: field optim.lr: .*greater than 0"):
        build_config(path)


def test_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "optim:\n  lr: 1.0e-4\n")
    with pytest.raises(ConfigError, match=r"--batch-size: field optim.batch_size"):
        build_config(path, {"--batch-size": 0})


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "model: m\noptim: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}: line \d+ is not valid YAML"):
        build_config(path)


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "model: a\ndata: d.jsonl\noptim:\n  lr: 1.0e-4\n  batch_size: 4\n"
        "steering:\n  trait: evil\n  coef: 5.0\n  layers: [20]\n",
    )
    cfg = build_config(path, {"--lr": 3e-4, "--model": "b", "--coef": 2.0, "--layers": "all"})
    assert cfg.model == "b" and cfg.optim.lr == 3e-4 and cfg.optim.batch_size == 4
    assert cfg.steering is not None and cfg.steering.coef == 2.0 and cfg.steering.layers == "all"
    ablated = build_config(path, {"--steer/--ablate": ("ablate", "evil")})
    assert (
        ablated.steering is not None and ablated.steering.mode == "ablate" and ablated.steering.coef is None
    )
    assert ablated.steering.layers == [20]


def test_steering_rules() -> None:
    with pytest.raises(ConfigError, match="needs a coef"):
        build_config(None, {"--steer/--ablate": ("add", "evil")})
    with pytest.raises(ConfigError, match="takes no coef"):
        build_config(None, {"--steer/--ablate": ("ablate", "evil"), "--coef": 2.0})
    with pytest.raises(ConfigError, match="--coef needs steering"):
        build_config(None, {"--coef": 2.0})
    with pytest.raises(ConfigError, match="layer 0, the embedding output"):
        build_config(None, {"--steer/--ablate": ("add", "evil"), "--coef": 1.0, "--layers": [0, 3]})
    cfg = build_config(None, {"--steer/--ablate": ("add", "evil"), "--coef": 1.5, "--incremental": True})
    assert cfg.steering is not None and cfg.steering.incremental and cfg.monitor_trait == "evil"
    with pytest.raises(ConfigError, match=r"--eval-every: .*no eval_data"):
        build_config(None, {"--eval-every": 5})
    with pytest.raises(ConfigError, match="no data"):
        build_config(None, {"--model": "m"}).require_inputs()


@pytest.mark.parametrize("path", sorted((REPO / "training").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = build_config(path)
    cfg.require_inputs(str(path))
    assert cfg.lora.r == 32 and cfg.lora.alpha == 64 and cfg.lora.rslora


def test_cli_validate_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = REPO / "training" / "smollm2-135m-cpu.yaml"
    assert main(["train", "--config", str(config), "--steer", "evil", "--coef", "3", "--validate"]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "coef: 3.0" in out and "mode: add" in out
    bad = write(tmp_path, "model: m\ndata: d\noptim:\n  lr: fast\n")
    assert main(["train", "--config", str(bad), "--validate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}: field optim.lr" in err
    assert main(["train", "--model", "m", "--validate"]) == 2
    assert "no data" in capsys.readouterr().err
