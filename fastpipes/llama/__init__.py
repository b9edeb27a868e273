"""transformers Llama: the builder and adapter (``pipeline``), loading local model directories
(``hf_dir``, ``quantized_load``), the reference models trained here (``reference``), the decode
benchmark (``bench``) and ``fastpipes run llama`` (``run``)."""
