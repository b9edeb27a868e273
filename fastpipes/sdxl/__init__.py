"""diffusers SDXL: the builder (``build``), the adapter (``pipeline``), the UNet-step benchmark
(``bench``) and ``fastpipes run sdxl`` (``run``)."""
