"""``kaito run`` plus the GPU provisioner, for as long as kaito_operator.manager.main does not add it
itself (the e2e tests then prefer ``kaito run``). Same settings, same composition root."""

from __future__ import annotations

import asyncio
import sys

from gpu_provisioner.setup import provisioner_controller_factory
from kaito_operator.manager import DEFAULT_CONTROLLERS, configure_logging, serve
from kaito_operator.settings import Settings


def main() -> int:
    settings = Settings()
    configure_logging(settings.log_level)
    return asyncio.run(serve(settings, [*DEFAULT_CONTROLLERS, provisioner_controller_factory]))


if __name__ == "__main__":
    sys.exit(main())
