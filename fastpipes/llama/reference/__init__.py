"""Reference Llama models trained here, for fidelity that random weights cannot show.

Random weights give flat next-token distributions, so top-1 agreement with FP32 says
little about a recipe, and no checkpoint can be downloaded. So fastpipes trains a small
one: a transformers ``LlamaForCausalLM`` with a byte-level vocabulary, on the Python
standard library's own sources (every machine has them offline), with a fixed seed, saved
as a normal Hugging Face directory in the fastpipes cache with a held-out split.

- ``models``: specs (``REFERENCE_MODELS``), :func:`reference_dir` (build on first use, then
  reuse; a file lock and an atomic rename), :func:`build_reference`;
- ``corpus``: the text; ``training``: the training loop;
- ``fidelity``: held-out windows, teacher-forced logits, perplexity, top-1 agreement.

From one command: ``python -m fastpipes.llama.reference build`` (or ``info``).

>>> from fastpipes.llama.pipeline import build_llama
>>> model = build_llama("trained-tiny")                                   # doctest: +SKIP
>>> tokens = heldout_batches(heldout_tokens(reference_dir()), 256, n=32)  # doctest: +SKIP
>>> perplexity(teacher_forced(model, tokens), tokens)                     # doctest: +SKIP
"""
from fastpipes.llama.reference.corpus import Corpus, encode, stdlib_corpus
from fastpipes.llama.reference.fidelity import (heldout_batches, heldout_tokens,
                                                          perplexity, teacher_forced,
                                                          top1_agreement)
from fastpipes.llama.reference.models import (REFERENCE_MODELS, VOCAB, ReferenceSpec,
                                                        build_reference, read_metadata,
                                                        reference_dir, spec_of, stored_dir)
from fastpipes.llama.reference.training import TrainConfig, train

__all__ = ["Corpus", "REFERENCE_MODELS", "ReferenceSpec", "TrainConfig", "VOCAB",
           "build_reference", "encode", "heldout_batches", "heldout_tokens", "perplexity",
           "read_metadata", "reference_dir", "spec_of", "stdlib_corpus", "stored_dir",
           "teacher_forced", "top1_agreement", "train"]
