"""The parts of the text + edges + palette codec (Rethinking Image Compression on the Web with Generative AI).

A picture is sent as what a text-to-image model needs to redraw it, each part optional:

* a **prompt** (:mod:`.prompt`: UTF-8 text, or a caption from a local captioning model);
* a **Canny edge map**, coded losslessly by :mod:`diffeic.bilevel`;
* a **colour palette**, the image averaged down to a small grid and coded with WebP (:mod:`.palette`);
* **kept regions**, boxes of the image sent as WebP pixels and pasted back (:mod:`.regions`);

framed by :mod:`.parts` (a versioned, self-delimiting byte format), with a **never-larger rule**
(:mod:`.fallback`) that stores a plain WebP of the image when that is no larger than the parts::

    from diffeic.semantic import encode_parts, decode_parts, inspect_parts
    data = encode_parts(rgb, "a cat on a sofa", edges=True, palette=32, keep=[(10, 10, 74, 74)])
    parts = decode_parts(data)          # SemanticParts: prompt, edges, palette, regions (or fallback)
    inspect_parts(data)["bytes"]        # bytes per part

This layer is exact (each part decodes to what was coded) and independent of any generative decoder.
"""
from .api import FallbackUsed, SemanticParts, decode_parts, encode_parts, inspect_parts
from .fallback import FallbackChoice, choose_fallback
from .palette import upsample_palette
from .prompt import CaptionUnavailable, caption_image
from .regions import KeptRegion, paste_regions

__all__ = ["encode_parts", "decode_parts", "inspect_parts", "SemanticParts", "FallbackUsed", "KeptRegion",
           "paste_regions", "upsample_palette", "caption_image", "CaptionUnavailable", "choose_fallback",
           "FallbackChoice"]
