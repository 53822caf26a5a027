"""Compression of trained models: techniques applied one after another to a checkpoint.

Every technique is a frozen dataclass of its own options (qat.compress.base.Technique),
registered under a short name, so a compression is an ordered list of technique configs
that round-trips to YAML/JSON. See qat.compress.base for the contract.
"""

# importing the technique modules registers them (qat.compress.base.REGISTRY)
from qat.compress import lowrank, sharing, unstructured  # noqa: E402,F401
