"""``inferprune agent``: serve latency measurements on this device (no torch here)."""

from __future__ import annotations

import argparse
import logging
from typing import Any


def register(commands: Any) -> None:
    """Add the ``agent`` command."""
    from service import agent

    parser = commands.add_parser(
        "agent",
        help="measure latency on this device for a server's jobs (no torch needed)",
        description="Run on the device a pruned model will ship to: register it with the "
        "server under --device NAME, wait for measurement requests of jobs whose "
        "latency.target is NAME (`--latency-target NAME`), time each ONNX model with "
        "onnxruntime (warm-up, fixed threads, median/p10/p90) and send the result back. "
        "Reconnects when the server restarts; Ctrl-C or SIGTERM stop it cleanly. On a "
        "device without inferprune, fetch the same agent from the server: "
        "`curl -O URL/v1/agent.py; pip install onnxruntime numpy httpx; python agent.py "
        "--server URL --token T --device NAME`.",
    )
    agent.add_arguments(parser)
    parser.set_defaults(handler=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    """Run the agent until interrupted; return its exit status."""
    from service import agent

    logging.getLogger("inferprune.agent").setLevel(logging.INFO)
    return agent.run(args)
