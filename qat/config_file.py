"""Reading the YAML/JSON config files of qat/ and flows/ (model configs, compression configs,
search spaces) with one error for a file that is missing or not YAML."""
from __future__ import annotations

from host.errors import ConfigError


def read_yaml(path, what: str):
    """The data of the YAML/JSON file ``path`` (a ``what``: "model config", "search space", ...);
    ConfigError naming the file when it is missing or unreadable."""
    from pathlib import Path

    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML/JSON: {' '.join(str(exc).split())}") from None
