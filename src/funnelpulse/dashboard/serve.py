"""Start the Streamlit server with the heavy modules already imported.

Streamlit runs page scripts inside the server process, so importing plotly, pandas and the data
layer here (before the first visitor) takes about a second off the first page render.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from ..errors import MissingDependencyError


def command(
    host: str, port: int, warehouse: str, config: str | None
) -> tuple[list[str], dict[str, str]]:
    """The server's command line and environment: the pages read this warehouse with the same
    settings file as the command that started them (absolute paths: the server may move)."""
    if importlib.util.find_spec("streamlit") is None:
        raise MissingDependencyError("streamlit", "dashboard")
    env = {**os.environ, "FUNNELPULSE_WAREHOUSE": str(Path(warehouse).resolve())}
    if config:
        env["FUNNELPULSE_CONFIG"] = str(Path(config).resolve())
    return [sys.executable, "-m", "funnelpulse.dashboard.serve", host, str(port)], env


def main(host: str, port: int) -> None:
    import pandas  # noqa: F401
    import plotly.express  # noqa: F401
    import plotly.graph_objects  # noqa: F401
    from streamlit.web import cli as streamlit_cli

    from . import common, data  # noqa: F401

    app = str(Path(__file__).parent / "Overview.py")
    streamlit_cli.main.main(
        args=[
            "run",
            app,
            "--server.port",
            str(port),
            "--server.address",
            host,
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            # viewers: no "Deploy" / developer menu, no tracebacks with server paths
            "--client.toolbarMode",
            "viewer",
            "--client.showErrorDetails",
            "none",
        ],
        prog_name="streamlit",
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
