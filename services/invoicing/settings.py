"""Knobs of the invoicing service only (``INVOICING_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

from pydantic import Field, FilePath

from services.kit.settings import CommonSettings, load_settings


class InvoicingSettings(CommonSettings):
    env_prefix_name: ClassVar[str] = "INVOICING"

    # The usage service's gRPC address (GetAggregate at period close).
    usage_addr: str = "127.0.0.1:50053"
    # Deadline of every call to the usage service.
    usage_deadline_seconds: float = Field(default=5.0, gt=0)
    # The subscriptions service's gRPC address (PreviewPlanChange checks the
    # change with ChangePlan validate_only).
    subscriptions_addr: str = "127.0.0.1:50052"
    # Deadline of every call to the subscriptions service.
    subscriptions_deadline_seconds: float = Field(default=5.0, gt=0)
    # How long a period-close draft waits for late usage and adjustments; 0
    # finalizes it in the transaction that built it.
    grace_period_seconds: float = Field(default=0.0, ge=0)
    # How often the worker finalizes drafts whose grace period ended; 0 = off.
    finalize_interval_seconds: float = Field(default=10.0, ge=0)
    # Payment terms: due_time = finalize_time + this.
    payment_terms_seconds: float = Field(default=0.0, ge=0)
    # TrueType fonts embedded in invoice PDFs; unset = DejaVu Sans when the OS
    # has it, else ReportLab's Vera (Latin only). Scripts the font lacks (CJK
    # with DejaVu) need a font that has them, e.g. a Noto Sans CJK .ttf.
    pdf_font_file: FilePath | None = None
    # Bold face of the same; unset = the regular font file.
    pdf_bold_font_file: FilePath | None = None


def invoicing_settings() -> InvoicingSettings:
    return load_settings(InvoicingSettings)


@dataclass(frozen=True)
class Policy:
    """What the handlers need of the settings."""

    grace_period: timedelta = timedelta(0)
    payment_terms: timedelta = timedelta(0)


def policy(settings: InvoicingSettings | None = None) -> Policy:
    s = settings or invoicing_settings()
    return Policy(
        grace_period=timedelta(seconds=s.grace_period_seconds),
        payment_terms=timedelta(seconds=s.payment_terms_seconds),
    )
