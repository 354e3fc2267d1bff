"""The product surface: FastAPI job API, SQL store, workers, Python client and CLI."""

from service.errors import ServiceError

__all__ = ["ServiceError"]
