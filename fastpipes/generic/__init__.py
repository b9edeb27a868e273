"""Any ``torch.nn.Module``: the generic adapter (``adapter``) and the toy benchmark workload
(``bench``), the smallest complete example of a family."""
