"""Run the AKS simulator as a process: ``python -m sandbox.aks_simulator --port 8443 ...``.

On start it prints one JSON line (endpoint, CA path, and the environment an operator needs), then
serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

from sandbox.aks_simulator.config import SimulatorConfig
from sandbox.aks_simulator.server import AksSimulator


def _parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m sandbox.aks_simulator", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--kubeconfig", type=Path, help="register nodes of succeeded pools in this cluster")
    parser.add_argument("--tls-dir", type=Path, help="where to write ca.pem and the server certificate")
    parser.add_argument(
        "--token-file", type=Path, help="write the federated service-account token the simulator accepts here"
    )
    parser.add_argument("--subscription-id", default=defaults.subscription_id)
    parser.add_argument("--resource-group", default=defaults.resource_group)
    parser.add_argument("--cluster-name", default=defaults.cluster_name)
    parser.add_argument("--location", default=defaults.location)
    parser.add_argument("--tenant-id", default=defaults.tenant_id)
    parser.add_argument("--client-id", default=defaults.client_id)
    parser.add_argument("--federated-token", default=defaults.federated_token)
    parser.add_argument("--provisioning-delay", type=float, default=defaults.provisioning_delay_s)
    parser.add_argument("--deletion-delay", type=float, default=defaults.deletion_delay_s)
    return parser


async def _serve(args: argparse.Namespace) -> None:
    config = SimulatorConfig(
        host=args.host,
        port=args.port,
        kubeconfig=args.kubeconfig,
        tls_dir=args.tls_dir,
        subscription_id=args.subscription_id,
        resource_group=args.resource_group,
        cluster_name=args.cluster_name,
        location=args.location,
        tenant_id=args.tenant_id,
        client_id=args.client_id,
        federated_token=args.federated_token,
        provisioning_delay_s=args.provisioning_delay,
        deletion_delay_s=args.deletion_delay,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AksSimulator(config) as simulator:
        token_file = args.token_file or (simulator.ca_path.parent / "federated-token")
        simulator.write_federated_token(token_file)
        info = {
            "endpoint": simulator.endpoint,
            "ca": str(simulator.ca_path),
            "environment": simulator.operator_environment(token_file),
        }
        print(json.dumps(info), flush=True)
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(_parser().parse_args()))


if __name__ == "__main__":
    main()
