"""What messages say (issue 32 item 7): one size convention everywhere, and command-line advice in flags."""
import re
from pathlib import Path

import diffeic
from diffeic.sizes import size_text

ROOT = Path(diffeic.__file__).parent

#: ``{a}x{b}`` in an f-string that is not an image size: eval's "point x factor" labels.
NOT_SIZES = {"evaluation/runner.py": [r"{point}x{factor:g}"]}


def hand_formatted_sizes(root: Path = ROOT):
    """``file:line`` of each f-string piece ``{…}x{…}`` / ``{…}×{…}`` outside ``sizes.py`` (a size written by
    hand, in whichever order that line chose)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == "sizes.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for piece in re.findall(r"\{[^{}]*\}\s*[x×]\s*\{[^{}]*\}", line):
                if piece not in NOT_SIZES.get(rel, []):
                    found.append(f"{rel}:{n}: {piece}")
    return found


def test_sizes_are_width_by_height_and_labelled():
    assert size_text(427, 640) == "640x427 (width x height)"


def test_no_message_formats_a_size_by_hand(tmp_path):
    assert hand_formatted_sizes() == []
    (tmp_path / "a.py").write_text('raise ValueError(f"image {h}x{w} too large")\n')
    (tmp_path / "b.py").write_text('print(f"{w} × {h}")\n')
    assert hand_formatted_sizes(tmp_path) == ["a.py:1: {h}x{w}", "b.py:1: {w} × {h}"]


def test_eval_advice_for_an_untrained_model_names_flags(tiny_codec, monkeypatch):
    """``eval.py --model tiny`` says the model is untrained with the command line's advice, and the codec's own
    warning (Python advice) does not follow it."""
    import warnings

    import diffeic.codecs.diffeic as codec_module
    import diffeic.codecs.registry
    from diffeic.evaluation.models import resolve_model

    monkeypatch.setattr(codec_module, "_warned_untrained", False)
    monkeypatch.setattr(diffeic.codecs.registry, "load_codec", lambda spec: tiny_codec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve_model("tiny")
        tiny_codec.compress(tiny_codec_input())
    messages = [str(w.message) for w in caught if "untrained" in str(w.message)]
    assert len(messages) == 1 and "--model demo-trained" in messages[0], messages
    assert "from_pretrained" not in messages[0]


def tiny_codec_input():
    import torch

    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
