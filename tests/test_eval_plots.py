"""RD plots a person can read: every text inside the figure, the axes given most of its width."""
import matplotlib
import pytest

from diffeic.evaluation import plots
from diffeic.evaluation.published import published_series
from diffeic.codecs.registry import SHIPPED_NOTES


@pytest.fixture
def captured(monkeypatch):
    """Keep the figure rd_plot draws (it closes it after saving)."""
    figs = []
    monkeypatch.setattr(plots.plt, "close", lambda fig=None: figs.append(fig))
    return figs


def test_longest_labels_stay_inside_the_figure_and_the_axes_keep_the_width(tmp_path, captured):
    ours = f"diffeic tiny-trained ({SHIPPED_NOTES['tiny-trained']}) + diffeic tiny_vr (untrained — pipeline check) (some at its lowest " \
           f"quality)"
    curves = [plots.Curve(ours, [0.02, 0.05, 0.1], {"lpips": [0.5, 0.4, 0.3]}, ours=True)]
    for name in ("JPEG (Pillow/libjpeg, 4:2:0, quality 1-95) (some at its lowest quality)",
                 "WebP (Pillow/libwebp, method 6)", "AVIF (Pillow, libaom, speed 6)", "HEVC (x265 via pillow-heif)",
                 "JPEG XL (imagecodecs libjxl, effort 7)", "JPEG 2000 (imagecodecs OpenJPEG, 5 layers)"):
        curves.append(plots.Curve(name, [0.1, 0.2, 0.4], {"lpips": [0.6, 0.5, 0.4]}))
    title = (f"samples: {ours}\npublished points are on kodak (other images: orientation only), and this line "
             f"is long on purpose to check that the title wraps inside the figure")
    paths = plots.rd_plot("lpips", curves, published_series("kodak"), title, tmp_path / "rd_lpips",
                          published_label="published, kodak")
    assert [p.suffix for p in paths] == [".png", ".svg"] and all(p.stat().st_size for p in paths)
    fig = captured[-1]
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    ax = fig.axes[0]
    legend = fig.legends[0] if fig.legends else ax.get_legend()
    texts = [ax.title, ax.xaxis.label, ax.yaxis.label, *legend.get_texts()]
    # Tick labels that are drawn (matplotlib keeps some outside the view limits, not drawn).
    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        texts += [t.label1 for t in axis.get_major_ticks() if min(lo, hi) <= t.get_loc() <= max(lo, hi)]
    assert len(texts) > 10 and "\n" in ax.title.get_text()        # the long title is wrapped
    for t in texts:
        e = t.get_window_extent(renderer)
        assert box.x0 - 0.5 <= e.x0 and e.x1 <= box.x1 + 0.5 and box.y0 - 0.5 <= e.y0 and e.y1 <= box.y1 + 0.5, \
            f"text {t.get_text()[:40]!r} at {e} outside the figure {box}"
    tight = fig.get_tightbbox(renderer)           # everything drawn, in inches
    w, h = fig.get_size_inches()
    assert tight.x0 >= -0.01 and tight.y0 >= -0.01 and tight.x1 <= w + 0.01 and tight.y1 <= h + 0.01
    assert ax.get_position().width > 0.8        # the legend does not squeeze the axes
    below = legend.get_window_extent(renderer).y1 <= ax.get_tightbbox(renderer).y0 + 1
    assert below                                # under the axes and their labels: no occlusion     # below the axes and their labels: no occlusion
    matplotlib.pyplot.close(fig)
