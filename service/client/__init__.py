"""Python client of the inferprune REST API (``/v1``): submit jobs, follow them, fetch results.

Every method returns the JSON body the server answered with (the shapes of
:mod:`service.api.schemas`) as plain dicts, and raises :class:`ClientError` for anything
that is not a 2xx answer, including a server that cannot be reached.

Example::

    with Client.from_environment() as client:
        job = client.submit({"arch": "resnet20_cifar", "dataset": "digits",
                             "budget": {"flops": 0.5}}, weights="base.safetensors")
        job = client.wait(job["id"])
        client.download(job["id"], "pruned.safetensors")
"""

from service.client._client import FINISHED_STATUSES, SUBMIT_TIMEOUT_S, Client
from service.client._errors import ClientError
from service.client._local import wait_for_local_server
from service.client._streaming import parse_sse

__all__ = [
    "FINISHED_STATUSES",
    "SUBMIT_TIMEOUT_S",
    "Client",
    "ClientError",
    "parse_sse",
    "wait_for_local_server",
]
