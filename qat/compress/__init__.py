"""Compression of trained models: techniques applied one after another to a checkpoint.

Every technique is a frozen dataclass of its own options (qat.compress.base.Technique),
registered under a short name, so a compression is an ordered list of technique configs
that round-trips to YAML/JSON. See qat.compress.base for the contract.
"""


def compress(config, progress: bool = True):
    """Run a compression from a notebook: ``config`` is a CompressConfig, a dict of its fields, or a
    YAML/JSON file; returns qat.compress.run.CompressResult (checkpoint, path, steps, candidate)."""
    from pathlib import Path

    from qat.compress.config import CompressConfig, load_config
    from qat.compress.run import compress as run

    if isinstance(config, dict):
        config = CompressConfig.from_dict(config)
    elif isinstance(config, (str, Path)):
        config = load_config(config)
    return run(config, progress)
