"""segment-anything (vit_b / vit_l / vit_h): the pipeline and its adapter (``pipeline``,
``predictor``), the encoder and click benchmarks (``bench``, ``click``, ``click_casts``) and
``fastpipes run sam`` (``run``, ``amg``, ``nms``, ``image_io``)."""
