"""Pascal VOC 2012 segmentation (+ SBD) in its on-disk format for the tests (the writers live in the
package, where the smoke versions of the studies use them too)."""

from selfsup.data.format_samples import SBD_TRAIN, SBD_VAL, VOC_TRAIN, VOC_VAL, H, W, image_of, write_png_mask
from selfsup.data.format_samples import write_voc_segmentation as write_voc

__all__ = ["SBD_TRAIN", "SBD_VAL", "VOC_TRAIN", "VOC_VAL", "H", "W", "image_of", "write_png_mask", "write_voc"]
