"""The :class:`Client`: one method per endpoint of the REST API (``/v1``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import httpx

from service.client._credentials import find_credentials
from service.client._errors import ClientError, _raise_for_error, _transport_error
from service.client._streaming import _guarded, _save_body, _StreamContext, parse_sse

__all__ = ["FINISHED_STATUSES", "SUBMIT_TIMEOUT_S", "Client"]

FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
"""Job statuses after which nothing changes any more."""

_Upload = str | Path | bytes


class _SpecModel(Protocol):
    def model_dump(self, *, mode: str = ...) -> dict[str, Any]: ...


SUBMIT_TIMEOUT_S = 300.0
"""How long a submission may take to answer: the server builds and checks the model."""


class Client:
    """A connection to one inferprune server, authenticated by a bearer token.

    Use it as a context manager (or call :meth:`close`) so the connection pool is
    released. One client may be used from one thread at a time.

    Args:
        server: Base URL of the server, e.g. ``http://127.0.0.1:8000`` (``http://`` is
            assumed when no scheme is given).
        token: The tenant's API token (``inferprune token create`` or ``inferprune serve``
            prints one).
        timeout: Seconds to wait for a connection or for each read.
        transport: An httpx transport to use instead of the network (tests pass
            ``httpx.MockTransport``).
    """

    def __init__(
        self,
        server: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = _normalize_server(server)
        self.token = token
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}", "User-Agent": _user_agent()},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_environment(
        cls,
        server: str | None = None,
        token: str | None = None,
        data_dir: Path | None = None,
        **kwargs: Any,
    ) -> Client:
        """Return a client for the server and token found where a user would keep them.

        Each of the two is taken from the first place that has it: the argument, the
        environment (``INFERPRUNE_SERVER``, ``INFERPRUNE_TOKEN``), then the file
        ``client.json`` that ``inferprune serve`` writes into its data folder.

        Args:
            server: Base URL of the server.
            token: API token.
            data_dir: Where to look for ``client.json`` (default: ``$INFERPRUNE_DATA_DIR``,
                else ``./inferprune-data``).
            **kwargs: Passed on to :class:`Client` (``timeout``, ``transport``).

        Returns:
            A client; nothing is sent until a method is called.

        Raises:
            ClientError: ``no_credentials`` if the server or the token is not found
                anywhere, or ``client.json`` cannot be read.
        """
        server, token = find_credentials(server, token, data_dir)
        return cls(server, token, **kwargs)

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.server!r})"

    # -- jobs -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Return the server's health report (``{"status": "ok", ...}``).

        Raises:
            ClientError: The server is unreachable or unhealthy.
        """
        return self._json("GET", "/healthz")

    def submit(
        self,
        spec: Mapping[str, Any] | _SpecModel,
        *,
        weights: _Upload | None = None,
        dataset: _Upload | None = None,
        idempotency_key: str | None = None,
        model: _Upload | None = None,
    ) -> dict[str, Any]:
        """Submit a pruning job; return it as queued (``JobPublic``).

        Args:
            spec: The job spec: a mapping, or a pydantic model such as
                :class:`search.spec.JobSpec`. The server fills the defaults and validates.
            weights: The trained model to prune (a path to a ``.safetensors`` or state-dict
                file, or its bytes); without it the job prunes random initial weights.
            dataset: An ``.npz`` data set to upload (path or bytes); the spec's ``dataset``
                should then be ``"upload"``.
            idempotency_key: Any unique string; submitting again with the same key returns
                the job created the first time instead of a second job.
            model: An ONNX model (path or bytes) to prune instead of the spec's ``arch``
                (leave ``arch`` out of the spec; ``weights`` do not apply).

        Returns:
            The job, with its ``id``.

        Raises:
            ClientError: The spec is invalid (``invalid_spec``), an upload is rejected,
                the tenant has too many active jobs, or the server is unreachable.
        """
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with ExitStack() as stack:
            files: dict[str, tuple[str | None, IO[bytes] | bytes | str]] = {
                # No filename: the server reads it as a plain form field.
                "spec": (None, json.dumps(_spec_data(spec))),
            }
            for field, upload, default_name in (
                ("weights", weights, "weights.safetensors"),
                ("dataset", dataset, "dataset.npz"),
                ("model", model, "model.onnx"),
            ):
                if upload is None:
                    continue
                if isinstance(upload, bytes):
                    files[field] = (default_name, upload)
                else:
                    path = Path(upload)
                    try:
                        handle = stack.enter_context(path.open("rb"))
                    except OSError as exc:
                        raise ClientError(
                            f"cannot read the {field} file {path}: {exc.strerror}",
                            code="unreadable_file",
                        ) from None
                    files[field] = (path.name, handle)
            # the server validates the model, weights and data before answering
            timeout = _timeout(self._timeout, read=max(self._timeout, SUBMIT_TIMEOUT_S))
            return self._json("POST", "/v1/jobs", files=files, headers=headers, timeout=timeout)

    def job(self, job_id: str) -> dict[str, Any]:
        """Return one job (``JobPublic``).

        Raises:
            ClientError: ``not_found`` if no job of this tenant has that id.
        """
        return self._json("GET", f"/v1/jobs/{job_id}")

    def jobs(self, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """Return one page of the tenant's jobs, newest first (``JobList``).

        Args:
            limit: Jobs per page.
            offset: Jobs to skip.

        Raises:
            ClientError: The server refused or is unreachable.
        """
        return self._json("GET", "/v1/jobs", params={"limit": limit, "offset": offset})

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask the server to cancel a job; return the job (``JobPublic``).

        Trials already running finish first; the job then ends as ``cancelled``.

        Raises:
            ClientError: ``not_found``, or the job has already finished.
        """
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def devices(self) -> dict[str, Any]:
        """Return the tenant's target devices (``DeviceList``): name, spec, last seen,
        live agents and measurement queue of each.

        Raises:
            ClientError: The server refused or is unreachable.
        """
        return self._json("GET", "/v1/devices")

    def trials(self, job_id: str) -> dict[str, Any]:
        """Return every trial of a job so far (``TrialList``).

        Raises:
            ClientError: ``not_found`` if there is no such job.
        """
        return self._json("GET", f"/v1/jobs/{job_id}/trials")

    def pareto(self, job_id: str) -> dict[str, Any]:
        """Return the accuracy-versus-cost front of a job (``ParetoPublic``).

        Raises:
            ClientError: ``not_found`` if there is no such job.
        """
        return self._json("GET", f"/v1/jobs/{job_id}/pareto")

    def pareto_png(self, job_id: str) -> bytes:
        """Return the Pareto front plotted as a PNG image.

        Raises:
            ClientError: ``not_found``, or no trial has finished yet.
        """
        return self._request("GET", f"/v1/jobs/{job_id}/pareto.png").content

    def download(
        self,
        job_id: str,
        path: str | Path,
        *,
        trial: int | None = None,
        format: str = "safetensors",
    ) -> Path:
        """Download a pruned model and return where it was written.

        The bytes stream into a temporary file beside the destination, which is renamed
        into place only once complete: an interrupted download never leaves half a model
        under the final name.

        Args:
            job_id: The job.
            path: Destination file. If it is an existing folder, the file goes inside it,
                named by the server (or ``<job id>.<format>``).
            trial: The trial whose model to fetch (default: the job's chosen best).
            format: ``safetensors`` (loads with ``models.io.load_pruned``), ``onnx``,
                ``pt2`` (torch.export) or ``torchscript``.

        Returns:
            The path of the written file.

        Raises:
            ClientError: ``not_found``, or 409 if the model is not ready yet.
        """
        destination = Path(path)
        params: dict[str, str | int] = {"format": format}
        if trial is not None:
            params["trial"] = trial
        with self._stream("GET", f"/v1/jobs/{job_id}/checkpoint", params=params) as response:
            return _save_body(response, destination, f"{job_id}.{format}", self.server)

    def events(
        self, job_id: str, *, read_timeout: float | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield the job's server-sent events as ``(event, data)`` until the stream ends.

        Events are ``status`` (data: the job), ``trial`` (data: a finished trial) and
        ``done`` (data: the finished job), after which the server closes the stream.
        Comments and keep-alives are skipped.

        Args:
            job_id: The job.
            read_timeout: Seconds to wait for the next line before giving up (default:
                wait as long as the stream stays open).

        Yields:
            The event name and its JSON data (a dict; a non-object payload comes as
            ``{"data": payload}``).

        Raises:
            ClientError: ``not_found``, the server is unreachable, or the connection
                drops (``connection_lost``).
        """
        timeout = _timeout(self._timeout, read=read_timeout)
        with self._stream(
            "GET",
            f"/v1/jobs/{job_id}/events",
            headers={"Accept": "text/event-stream"},
            timeout=timeout,
        ) as response:
            yield from parse_sse(_guarded(response.iter_lines, self.server))

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll a job until it has finished; return it.

        Args:
            job_id: The job.
            poll_s: Seconds between polls.
            timeout_s: Give up after this many seconds (default: never).
            on_update: Called with the job after every poll, the last one included.

        Returns:
            The job, with status ``succeeded``, ``failed`` or ``cancelled``.

        Raises:
            ClientError: ``timeout`` if the job is still going after ``timeout_s``, or any
                error of :meth:`job`.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job.get("status") in FINISHED_STATUSES:
                return job
            pause = poll_s
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientError(
                        f"job {job_id} is still {job.get('status')} after {timeout_s:g} s; "
                        "it keeps running on the server",
                        code="timeout",
                    )
                pause = min(poll_s, remaining)
            time.sleep(pause)

    # -- plumbing ---------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.server) from None
        _raise_for_error(response)
        return response

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, url, **kwargs)
        try:
            body = response.json()
        except ValueError:
            raise ClientError(
                f"the server answered {method} {url} with something that is not JSON "
                f"({response.headers.get('content-type', 'no content type')})",
                code="bad_response",
                status=response.status_code,
            ) from None
        if not isinstance(body, dict):
            raise ClientError(
                f"the server answered {method} {url} with JSON that is not an object",
                code="bad_response",
                status=response.status_code,
            )
        return body

    def _stream(self, method: str, url: str, **kwargs: Any) -> _StreamContext:
        return _StreamContext(self, self._http.build_request(method, url, **kwargs))


def _spec_data(spec: Mapping[str, Any] | _SpecModel) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    return spec.model_dump(mode="json")


def _normalize_server(server: str) -> str:
    server = server.strip().rstrip("/")
    if "://" not in server:
        server = f"http://{server}"
    return server


def _user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"inferprune-client/{version('inferprune')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "inferprune-client"


def _timeout(seconds: float, *, read: float | None) -> tuple[float, float | None, float, float]:
    """Return httpx's (connect, read, write, pool) timeouts as a tuple, which httpx and
    httpx2 (Starlette's test client, when installed) both accept; neither takes the
    other's ``Timeout`` object."""
    return (seconds, read, seconds, seconds)
