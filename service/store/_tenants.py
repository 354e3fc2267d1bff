"""Tenants: a name that owns tokens and jobs. Deleting one revokes and cancels."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store._jobs import request_cancel
from service.store._states import ACTIVE_STATUSES
from service.store._tables import Job
from service.store._tokens import TokenInfo, revoke_tenant

__all__ = ["DeletedTenant", "delete_tenant"]


@dataclass(frozen=True)
class DeletedTenant:
    """What deleting a tenant did."""

    tenant: str
    tokens: list[TokenInfo]
    cancelled_jobs: list[str]


def delete_tenant(session: Session, tenant: str) -> DeletedTenant:
    """Revoke every token of ``tenant`` and cancel its queued and running jobs.

    Its finished jobs and their artifacts stay in the store; a new token for the same
    name makes them visible again.

    Raises:
        TenantNotFound: the tenant has no live token.
    """
    tokens = revoke_tenant(session, tenant)  # first: a job being created now waits or fails
    active = session.scalars(
        select(Job.id).where(Job.tenant == tenant, Job.status.in_(ACTIVE_STATUSES))
    ).all()
    for job_id in active:
        request_cancel(session, tenant, job_id)
    return DeletedTenant(tenant=tenant, tokens=tokens, cancelled_jobs=list(active))
