"""`fastpipes` command line: one module per subcommand (``fastpipes/cli/NAME.py``).

Each exposes ``add_parser(subparsers)`` (which sets ``func=run``) and ``run(args) -> int``.
Their one-line help is here, not in the module, because ``fastpipes --help`` lists every
sub-command and must not import them: building ``bench`` or ``run`` reads the family
registry, which imports torch and every family (cli/main.py).
"""

# sub-command -> its line in `fastpipes --help`, in that order
SUBCOMMANDS = {
    "info": "what this machine can do (tier, ISA, native bf16, threads, packages)",
    "recipes": "list, show, validate or start recipes",
    "bench": "benchmark recipes against FP32 eager",
    "cache": "show or clear the fastpipes cache",
    "run": "run an accelerated pipeline over your inputs",
    "export": "write a pipeline's parts as ONNX",
}
