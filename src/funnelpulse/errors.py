"""One root error; the CLI prints `Error: <message>` for any of them."""


class FunnelPulseError(Exception):
    """Something the user can fix; the message says what failed and what to do."""


class InputError(FunnelPulseError):
    """An input file is missing, empty or not in the raw REES46 format."""


class WarehouseError(FunnelPulseError):
    """A table the step needs is missing or unreadable."""


class ConfigError(FunnelPulseError):
    """A setting is invalid."""


class EngineError(FunnelPulseError):
    """An engine ran out of memory, died or could not start; the message names the setting."""


class MissingDependencyError(FunnelPulseError):
    """An optional extra is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed. Install it with: pip install 'funnelpulse[{extra}]'"
        )


class Interrupted(FunnelPulseError):
    """The user stopped a long command (Ctrl-C); the message says what was done before it stopped.
    The command line exits 130, as for any Ctrl-C."""
