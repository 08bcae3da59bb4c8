"""Config values are checked when a config is built: one line naming the field, the value and what is allowed."""
import numpy as np
import pytest

from diffeic.config import DiffEICConfig, get_config


def _with(path: str, value):
    data = get_config("tiny").to_dict()
    *parents, key = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    node[key] = value
    return data


@pytest.mark.parametrize("path, value, message", [
    ("lfgcm.scale_levels", 1, r"lfgcm\.scale_levels = 1: must be an integer in \[2, 256\]"),       # was ZeroDivisionError
    ("lfgcm.scale_min", 0, r"lfgcm\.scale_min = 0\.0: must be a finite number > 0"),              # was "Invalid parameters"
    ("lfgcm.scale_max", 0.05, r"lfgcm\.scale_max = 0\.05: must be a finite number in \(0\.11, 1024\]"),
    ("lfgcm.scale_min", float("nan"), r"lfgcm\.scale_min = nan"),
    ("sampler.seed", 2 ** 70, r"sampler\.seed = 1180591620717411303424: must be an integer in \[0, "),  # was Overflow
    ("init_seed", -1, r"init_seed = -1: must be an integer"),
    ("sampler.steps", True, r"sampler\.steps = True: must be an integer in \[1, 10000\]"),
    ("sampler.steps", 2.5, r"sampler\.steps = 2\.5"),
    ("sampler.name", "euler", r"sampler\.name = 'euler': must be one of ddpm, ddim, dpmpp, fewstep"),
    ("sampler.fewstep_start", 1000, r"sampler\.fewstep_start = 1000: must be below"),
    ("backbone.pretrained", "no", r"backbone\.pretrained = 'no': must be true or false"),
    ("lfgcm.slices", "2,2", r"lfgcm\.slices = '2,2': must be a non-empty list"),
    ("lfgcm.N", 0, r"lfgcm\.N = 0: must be an integer in \[1, 65536\]"),
    ("lfgcm.N", 2 ** 70, r"lfgcm\.N = 1180591620717411303424: must be an integer in \[1, 65536\]"),   # was an overflow
    ("control.width_ratio", 2, r"control\.width_ratio = 2\.0: must be a finite number in \(0, 1\]"),
    ("lfgcm", [1, 2], r"config\.lfgcm = \[1, 2\]: must be a mapping"),
])
def test_bad_values_are_named(path, value, message):
    with pytest.raises(ValueError, match=message) as info:
        DiffEICConfig.from_dict(_with(path, value))
    assert "\n" not in str(info.value)


def test_numpy_integers_are_plain_ints_after_checking():
    cfg = DiffEICConfig.from_dict(_with("sampler.steps", np.int32(7)))
    assert cfg.sampler.steps == 7 and type(cfg.sampler.steps) is int


def test_presets_pass_their_own_checks_and_round_trip():
    for name in ("tiny", "sd21"):
        cfg = get_config(name)
        assert DiffEICConfig.from_dict(cfg.to_dict()) == cfg


def test_yaml_syntax_errors_are_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("lfgcm:\n  N: [16\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not valid YAML \(line \d+, column \d+\)"):
        get_config(path)
