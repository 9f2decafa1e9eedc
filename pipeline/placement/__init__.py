"""GPU memory plans: `plan` (pure arithmetic, no torch: the API process admits jobs with it) and
`apply` (placing the loaded modules on a GPU under a plan).

Empty on purpose: importing `pipeline.placement.plan` must not import torch.
"""
