"""Detection datasets in their on-disk formats for the tests (the writers live in the package, where the
smoke versions of the studies use them too)."""

from selfsup.data.format_samples import SIDE, image_with_boxes, write_coco, write_pennfudan
from selfsup.data.format_samples import write_voc_detection as write_voc

__all__ = ["SIDE", "image_with_boxes", "write_coco", "write_pennfudan", "write_voc"]
