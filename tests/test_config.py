"""Config loading: allowed values, ranges, the margin's one owner, overrides, CLI one-liners."""

from __future__ import annotations

from pathlib import Path

import pytest

from speakerid.cli.main import main
from speakerid.config import ConfigError, FeatureConfig, TrainConfig, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        # allowed values (typing.Literal), checked when the YAML is read
        ("data: {sampler: random}", "data.sampler: got 'random', allowed shuffle|pk"),
        ("optim: {name: rmsprop}", "optim.name: got 'rmsprop', allowed sgd|adam|adamw"),
        ("optim: {scheduler: step}", "optim.scheduler: got 'step', allowed exponential|cosine"),
        ("amp: fp8", "amp: got 'fp8', allowed none|bf16|fp16"),
        ("augment: {mixup: {domain: labels}}", "augment.mixup.domain: got 'labels', allowed features|waveform"),
        # sizes, learning rate, sample rate, probabilities
        ("data: {batch_size: 0}", "data.batch_size: must be >= 1, got 0"),
        ("data: {chunk_frames: -200}", "data.chunk_frames: must be >= 1, got -200"),
        ("optim: {lr: -0.1}", "optim.lr: must be > 0, got -0.1"),
        ("optim: {lr: 0}", "optim.lr: must be > 0, got 0.0"),
        ("optim: {lr: .nan}", "optim.lr: must be > 0, got nan"),
        ("features: {sample_rate: 0}", "features.sample_rate: must be >= 1, got 0"),
        ("features: {num_mel_bins: -3}", "features.num_mel_bins: must be >= 1, got -3"),
        ("augment: {noise: {prob: 1.5}}", "augment.noise.prob: must be >= 0 and <= 1, got 1.5"),
        ("average_last: -2", "average_last: must be >= 1, got -2"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = _write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}: {message}"


def test_margin_has_one_owner(tmp_path: Path) -> None:
    both = _write(tmp_path, "loss: {name: aam, kwargs: {margin: 0.2}}\nmargin: {final: 0.3}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: loss.kwargs.margin \(0.2\) and the margin schedule .* keep one"):
        load_config(both)
    # either owner alone is fine; so is a `margin` argument of a loss the schedule does not drive
    assert load_config(_write(tmp_path, "loss: {name: aam, kwargs: {margin: 0.2}}\nmargin: {enabled: false}\n"))
    assert load_config(_write(tmp_path, "loss: {name: aam}\nmargin: {final: 0.3}\n")).margin.final == 0.3
    assert load_config(_write(tmp_path, "loss: {name: triplet, kwargs: {margin: 0.3}}\n")).loss.kwargs["margin"] == 0.3


def test_shipped_recipe_configs_load() -> None:
    for path in sorted((REPO / "recipes").glob("*/conf/*.yaml")):
        load_config(path)


def test_override_into_a_value_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: --set seed.x=1: seed is a value \(3\), not a section"):
        load_config(path, overrides=["seed.x=1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(path, overrides=["seed"])
    assert load_config(path, overrides=["optim.lr=0.05"]).optim.lr == 0.05


def test_defaults_are_valid() -> None:
    assert config_from_dict(TrainConfig, {}) == TrainConfig()
    assert config_from_dict(FeatureConfig, {}) == FeatureConfig()


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_cli_features_zero_mel_bins_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _write(tmp_path, "features: {num_mel_bins: 0}\n")
    err = _one_line_error(capsys, ["features", "--data", str(tmp_path / "nodata"), "--config", str(cfg)])
    assert f"{cfg}: features.num_mel_bins: must be >= 1, got 0" in err


def test_cli_train_set_into_a_value_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _write(tmp_path, "seed: 1\n")
    argv = ["train", "--config", str(cfg), "--data", str(tmp_path), "--exp", str(tmp_path / "exp"), "--set", "seed.x=1"]
    assert "seed is a value (1), not a section" in _one_line_error(capsys, argv)
    assert not (tmp_path / "exp").exists()


def test_cli_threshold_nan_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", "--model", str(tmp_path), "--db", str(tmp_path / "db"), "--speaker", "a", "x.wav",
                 "--threshold", "nan"]) == 2
    assert "--threshold: must be a finite number, got 'nan'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["features", "--data", "d", "--config", "c.yaml", "--nj", "0"], "argument --nj: must be >= 1, got 0"),
    (["identify", "--db", "x.db", "--top-k", "0", "a.wav"], "argument --top-k: must be >= 1, got 0"),
    (["extract", "--exp", "e", "--data", "d", "--out", "o", "--num-workers", "-1"], "argument --num-workers: must be >= 0"),
    (["extract", "--exp", "e", "--data", "d", "--out", "o", "--threads", "two"], "argument --threads: not an integer: 'two'"),
])
def test_cli_sizes_are_range_checked(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
