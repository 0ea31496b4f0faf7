"""Images and boxes: COCO loading, box -> patch mapping, masks and inpainting.

* :mod:`vlground.vision.geometry`: :class:`Preprocess` and :func:`box_to_patches`, the one
  box-to-patch mapping every adapter uses;
* :mod:`vlground.vision.coco`: :func:`load_coco`, typed images and annotations, skipped items;
* :mod:`vlground.vision.masks`: box / segmentation masks and :func:`paste_outside`;
* :mod:`vlground.vision.inpaint`: the Stable Diffusion inpainting wrapper;
* :mod:`vlground.vision.tiny`: tiny random SD2-inpainting pipelines for tests and the demo.

Submodules are imported on use so that ``import vlground.vision`` stays cheap.
"""
