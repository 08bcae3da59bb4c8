"""How every message writes an image size: ``640x427 (width x height)``, width first, labelled once.

The code keeps sizes as ``(height, width)`` (tensor order); messages follow the usual image-size order
(width first, as ``diffeic compress`` prints it and ``benchmarks --size`` reads it), said in words so that
nobody has to guess which number is which.
"""


def size_text(height: int, width: int) -> str:
    """``size_text(427, 640) == "640x427 (width x height)"``; arguments in the code's (height, width) order."""
    return f"{width}x{height} (width x height)"
